with

source as (
    select * from {{ source('raw', 'access_events') }}
),

parsed as (
    select
        trim(event_id) as event_id,
        trim(instance_id) as instance_id,
        trim(user_id) as user_id,
        lower(trim(action)) as action,
        {{ parse_timestamp('occurred_at') }} as occurred_at,
        occurred_at as occurred_at_text,
        _file_name as file_name,
        _row_number as row_number
    from source
),

checked as (
    select
        *,
        {{ first_failed_check([
            (is_blank('event_id'), "'missing event_id'"),
            (is_blank('occurred_at_text'), "'missing occurred_at'"),
            ("occurred_at is null", "'unparseable occurred_at: ' || occurred_at_text"),
            (is_blank('instance_id'), "'missing instance_id'"),
            (is_blank('user_id'), "'missing user_id'"),
            (is_blank('action'), "'missing action'"),
            ("action not in ('invite', 'grant', 'revoke')", "'unknown action: ' || action"),
        ]) }} as quarantine_reason
    from parsed
)

select * from checked
