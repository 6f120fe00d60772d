{{ config(alias='instances') }}

{{ quarantine_rows('instances') }}
