{{ config(alias='users') }}

{{ quarantine_rows('users') }}
