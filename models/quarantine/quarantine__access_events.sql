{{ config(alias='access_events') }}

{{ quarantine_rows('access_events', bookkeeping=['load_id', 'is_first_read']) }}
