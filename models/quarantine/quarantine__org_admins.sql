{{ config(alias='org_admins') }}

{{ quarantine_rows('org_admins') }}
