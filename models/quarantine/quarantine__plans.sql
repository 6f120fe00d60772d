{{ config(alias='plans') }}

{{ quarantine_rows('plans') }}
