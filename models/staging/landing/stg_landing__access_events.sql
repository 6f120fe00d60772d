-- One row per event (rows sharing an event_id are one event: the first read wins), as of
-- the as-of instant: the run sees only events with occurred_at < A.
with

events as (
    select * from {{ ref('base_landing__access_events') }}
    where quarantine_reason is null
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by event_id order by file_name, row_number
        ) as occurrence
    from events
),

final as (
    select
        event_id,
        instance_id,
        user_id,
        action,
        occurred_at,
        file_name,
        row_number
    from deduplicated
    where occurrence = 1 and occurred_at < {{ as_of_instant() }}
)

select * from final
