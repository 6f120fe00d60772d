{{ config(alias='last_seen') }}

{{ quarantine_rows('last_seen') }}
