-- One row per plan and day, from the plan's first event day to the as-of date D. Day d's
-- figures are at d + 1 day 00:00 (they see events before that instant).
with

segments as (
    select * from {{ ref('int_access_intervals_merged_to_plans') }}
),

events as (
    select * from {{ ref('stg_landing__access_events') }}
),

instances as (
    select * from {{ ref('stg_landing__instances') }}
),

versions as (
    select * from {{ ref('int_plan_versions') }}
),

plans as (
    select * from {{ ref('int_plans_as_of') }}
),

first_event_days as (
    select
        instances.plan_id,
        min(cast(events.occurred_at as date)) as first_day
    from events
    inner join instances on events.instance_id = instances.instance_id
    group by instances.plan_id
),

days as (
    select
        plan_id,
        cast(unnest(generate_series(first_day, {{ as_of_date() }}, interval 1 day)) as date)
            as day
    from first_event_days
),

deltas as (
    select
        plan_id,
        first_day as day,
        1 as user_delta,
        case when status = 'invited' then 1 else 0 end as invited_delta
    from segments

    union all

    select
        plan_id,
        last_day + 1 as day,
        -1 as user_delta,
        case when status = 'invited' then -1 else 0 end as invited_delta
    from segments
    where last_day is not null
),

daily_deltas as (
    select
        plan_id,
        day,
        sum(user_delta) as user_delta,
        sum(invited_delta) as invited_delta
    from deltas
    group by plan_id, day
),

running as (
    select
        days.plan_id,
        days.day,
        sum(coalesce(daily_deltas.user_delta, 0)) over by_day as user_count,
        sum(coalesce(daily_deltas.invited_delta, 0)) over by_day as invited_count
    from days
    left join daily_deltas on days.plan_id = daily_deltas.plan_id and days.day = daily_deltas.day
    window by_day as (
        partition by days.plan_id order by days.day
        rows between unbounded preceding and current row
    )
),

final as (
    select
        plans.org_id,
        running.plan_id,
        running.day,
        cast(running.user_count as bigint) as user_count,
        cast(running.invited_count as bigint) as invited_count,
        versions.user_tier
    from running
    inner join plans on running.plan_id = plans.plan_id
    inner join versions
        on running.plan_id = versions.plan_id
            and versions.valid_from <= cast(running.day + 1 as timestamp)
            and cast(running.day + 1 as timestamp) < versions.valid_to
)

select * from final
