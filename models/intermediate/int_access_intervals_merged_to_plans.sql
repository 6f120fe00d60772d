{{ config(
    materialized='incremental',
    unique_key=['plan_id', 'user_id', 'first_day'],
    incremental_strategy='append',
    pre_hook="{{ delete_changed('int_access_pairs_changed', ['user_id']) }}",
) }}
-- depends_on: {{ ref('int_access_pairs_changed') }}
-- Per (plan, user): the days on which the user is counted in the plan, with its status.
-- Day d's figure is at d + 1 day 00:00 and sees events before it, i.e. events dated <= d,
-- so an instance span [valid_from, valid_to) counts on days date(valid_from) ..
-- date(valid_to) - 1. A user is active in the plan on a day when active on any of its
-- instances, invited when invited on some and active on none.
-- last_day is null while the status lasts.
-- Incremental: every plan of each user in int_access_pairs_changed is computed again.
with

spans as (
    select * from {{ ref('int_access_state_intervals') }}
    {%- if is_incremental() %}
        where user_id in (
                select changed.user_id from {{ ref('int_access_pairs_changed') }} as changed
            )
    {%- endif %}
),

instances as (
    select * from {{ ref('stg_landing__instances') }}
),

instance_days as (
    select
        instances.plan_id,
        spans.user_id,
        spans.state,
        cast(spans.valid_from as date) as first_day,
        cast(spans.valid_to as date) - 1 as last_day
    from spans
    inner join instances on spans.instance_id = instances.instance_id
    where spans.valid_to is null or cast(spans.valid_to as date) > cast(spans.valid_from as date)
),

deltas as (
    select
        plan_id,
        user_id,
        first_day as day,
        case when state = 'active' then 1 else 0 end as active_delta,
        case when state = 'invited' then 1 else 0 end as invited_delta
    from instance_days

    union all

    select
        plan_id,
        user_id,
        last_day + 1 as day,
        case when state = 'active' then -1 else 0 end as active_delta,
        case when state = 'invited' then -1 else 0 end as invited_delta
    from instance_days
    where last_day is not null
),

daily_deltas as (
    select
        plan_id,
        user_id,
        day,
        sum(active_delta) as active_delta,
        sum(invited_delta) as invited_delta
    from deltas
    group by plan_id, user_id, day
),

-- Instances the user is active / invited on, from that day and up to the day before: one
-- sort for all four sums (the same partition and order).
instance_counts as (
    select
        plan_id,
        user_id,
        day,
        sum(active_delta) over up_to_day as active_instances,
        sum(invited_delta) over up_to_day as invited_instances,
        coalesce(sum(active_delta) over before_day, 0) as active_instances_before,
        coalesce(sum(invited_delta) over before_day, 0) as invited_instances_before
    from daily_deltas
    window
        up_to_day as (
            partition by plan_id, user_id order by day
            rows between unbounded preceding and current row
        ),
        before_day as (
            partition by plan_id, user_id order by day
            rows between unbounded preceding and 1 preceding
        )
),

statuses as (
    select
        plan_id,
        user_id,
        day,
        case
            when active_instances > 0 then 'active'
            when invited_instances > 0 then 'invited'
            else 'none'
        end as status,
        case
            when active_instances_before > 0 then 'active'
            when invited_instances_before > 0 then 'invited'
            else 'none'
        end as status_before
    from instance_counts
),

segments as (
    select
        plan_id,
        user_id,
        status,
        day as first_day,
        lead(day) over (partition by plan_id, user_id order by day) - 1 as last_day
    from statuses
    where status <> status_before
),

final as (
    select * from segments
    where status <> 'none'
)

select * from final
