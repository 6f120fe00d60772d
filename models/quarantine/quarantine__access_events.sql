{{ config(alias='access_events') }}

{{ quarantine_rows('access_events') }}
