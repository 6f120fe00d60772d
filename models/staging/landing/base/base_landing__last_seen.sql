{{ config(
    materialized='incremental',
    unique_key=['file_name', 'row_number'],
    incremental_strategy='delete+insert',
) }}
-- Every last_seen row as read, typed, with the reason it is quarantined (null: usable);
-- last_seen_at_text, the value as read, is kept on quarantined rows only.
-- A table kept incrementally: each build parses only the rows loaded since the last one.
with

source as (
    select * from {{ source('raw', 'last_seen') }}
    {% if is_incremental() -%}
        where _load_id > {{ previous_load_id() }}
    {%- endif %}
),

parsed as (
    select
        trim(instance_id) as instance_id,
        trim(user_id) as user_id,
        {{ parse_timestamp('last_seen_at') }} as last_seen_at,
        last_seen_at as last_seen_at_text,
        _file_name as file_name,
        _row_number as row_number,
        _load_id as load_id
    from source
),

checked as (
    select
        *,
        {{ first_failed_check([
            (is_blank('instance_id'), "'missing instance_id'"),
            (is_blank('user_id'), "'missing user_id'"),
            (is_blank('last_seen_at_text'), "'missing last_seen_at'"),
            ("last_seen_at is null", "'unparseable last_seen_at: ' || last_seen_at_text"),
        ]) }} as quarantine_reason
    from parsed
),

final as (
    -- the text as read is kept where it explains a quarantine (on a usable row it only
    -- repeats last_seen_at)
    select
        * replace (
            case when quarantine_reason is not null then last_seen_at_text end
                as last_seen_at_text
        )
    from checked
)

select * from final
