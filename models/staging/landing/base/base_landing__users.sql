{{ config(
    materialized='incremental',
    unique_key=['file_name', 'row_number'],
    incremental_strategy='delete+insert',
) }}
-- Every users row as read, typed, with the reason it is quarantined (null: usable).
-- A table kept incrementally: each build parses only the rows loaded since the last one.
with

source as (
    select * from {{ source('raw', 'users') }}
    {% if is_incremental() -%}
        where _load_id > {{ previous_load_id() }}
    {%- endif %}
),

parsed as (
    select
        trim(user_id) as user_id,
        trim(email) as email,
        trim(display_name) as display_name,
        lower(trim(account_type)) as account_type,
        {{ parse_boolean('is_billable') }} as is_billable,
        is_billable as is_billable_text,
        _file_name as file_name,
        _row_number as row_number,
        _load_id as load_id
    from source
),

checked as (
    select
        *,
        {{ first_failed_check([
            (is_blank('user_id'), "'missing user_id'"),
            (is_blank('account_type'), "'missing account_type'"),
            ("account_type not in ('atlassian', 'app', 'customer')",
                "'unknown account_type: ' || account_type"),
            ("is_billable is null and not " ~ is_blank('is_billable_text'),
                "'unparseable is_billable: ' || is_billable_text"),
        ]) }} as quarantine_reason
    from parsed
)

select * from checked
