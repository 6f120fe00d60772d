-- Per (instance, user): the spans in which the pair is invited or active. A span holds for
-- the instants t with valid_from < t <= valid_to (a count at t sees events before t);
-- valid_to is null while it lasts. Spans that open and close at one instant are dropped.
-- access_since is the start of the unbroken run of access the span belongs to.
with

sequenced as (
    select * from {{ ref('int_access_events_sequenced') }}
),

with_state_before as (
    select
        *,
        lag(state_after, 1, 'none') over (
            partition by instance_id, user_id order by occurred_at, event_id
        ) as state_before
    from sequenced
),

state_changes as (
    select * from with_state_before
    where state_after <> state_before
),

spans as (
    select
        instance_id,
        user_id,
        state_after as state,
        occurred_at as valid_from,
        lead(occurred_at) over (
            partition by instance_id, user_id order by occurred_at, event_id
        ) as valid_to
    from state_changes
),

access_spans as (
    select * from spans
    where state <> 'none' and (valid_to is null or valid_to > valid_from)
),

with_run_starts as (
    select
        *,
        coalesce(
            lag(valid_to) over (partition by instance_id, user_id order by valid_from)
            <> valid_from,
            true
        ) as starts_run
    from access_spans
),

with_run_ids as (
    select
        *,
        sum(case when starts_run then 1 else 0 end) over (
            partition by instance_id, user_id order by valid_from
            rows between unbounded preceding and current row
        ) as run_id
    from with_run_starts
),

final as (
    select
        instance_id,
        user_id,
        state,
        valid_from,
        valid_to,
        min(valid_from) over (partition by instance_id, user_id, run_id) as access_since
    from with_run_ids
)

select * from final
