-- One row per event (rows sharing an event_id are one event: the first read wins), as of
-- the as-of instant: the run sees only events with occurred_at < A.
with

events as (
    select * from {{ ref('base_landing__access_events') }}
    where is_first_read
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
    from events
    where occurred_at < {{ as_of_instant() }}
)

select * from final
