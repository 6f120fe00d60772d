{{ config(
    materialized='incremental',
    unique_key=['plan_id', 'day'],
    incremental_strategy='delete+insert',
    pre_hook="{{ delete_daily_counts_to_recompute() }}",
) }}
-- depends_on: {{ ref('int_access_pairs_changed') }}
-- depends_on: {{ ref('base_landing__plans') }}
-- One row per plan and day, from the plan's first event day to the as-of date D. Day d's
-- figures are at d + 1 day 00:00 (they see events before that instant).
-- Incremental: a day's figures change only from the day of the earliest changed event on
-- (int_access_pairs_changed), or from the day after the last build's as-of date for the new
-- days; the days from there to D are computed again, carrying on from the day before. A
-- night with new plan rows (tiers, orgs), a moved instance or a plan moved to another org
-- recomputes every day: the pre-hook (macros/incremental.sql) empties the table, and an
-- empty table is computed again from the beginning. Every day shows the org in force at A.
{%- set previous = previous_build() if is_incremental() else none %}
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

start as (
    -- the first day computed again (every day on a build from scratch)
    select
        {%- if previous is none %}
            cast('-infinity' as date) as start_day
        {%- else %}
            case
                when not exists (select 1 from {{ this }})
                    then cast('-infinity' as date)
                else
                    least(
                        cast('{{ previous.as_of_date }}' as date) + 1,
                        coalesce(
                            (
                                select cast(min(changed_from) as date)
                                from {{ ref('int_access_pairs_changed') }}
                            ),
                            cast('{{ previous.as_of_date }}' as date) + 1
                        )
                    )
            end as start_day
        {%- endif %}
),

carried as (
    -- each plan's figures on the day before the start (none on a build from scratch)
    {%- if previous is none %}
        select
            plan_id,
            0 as user_count,
            0 as invited_count
        from plans
        where false
    {%- else %}
        select
            plan_id,
            user_count,
            invited_count
        from {{ this }}
        where day = (select start.start_day from start) - 1
    {%- endif %}
),

first_event_days as (
    select
        instances.plan_id,
        min(cast(events.occurred_at as date)) as first_day
    from events
    inner join instances on events.instance_id = instances.instance_id
    where events.occurred_at >= (select cast(start.start_day as timestamp) from start)
    group by instances.plan_id
),

first_days as (
    -- plans with figures before the start carry on from it; others start at their first event
    select
        plan_id,
        min(first_day) as first_day
    from (
        select
            carried.plan_id,
            start.start_day as first_day
        from carried
        cross join start

        union all

        select * from first_event_days
    ) as plan_starts
    group by plan_id
),

days as (
    select
        plan_id,
        cast(unnest(generate_series(first_day, {{ as_of_date() }}, interval 1 day)) as date)
            as day
    from first_days
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
    where day >= (select start.start_day from start)
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

carried_on as (
    select
        running.plan_id,
        running.day,
        coalesce(carried.user_count, 0) + running.user_count as user_count,
        coalesce(carried.invited_count, 0) + running.invited_count as invited_count
    from running
    left join carried on running.plan_id = carried.plan_id
),

final as (
    select
        plans.org_id,
        carried_on.plan_id,
        carried_on.day,
        cast(carried_on.user_count as bigint) as user_count,
        cast(carried_on.invited_count as bigint) as invited_count,
        versions.user_tier
    from carried_on
    inner join plans on carried_on.plan_id = plans.plan_id
    inner join versions
        on carried_on.plan_id = versions.plan_id
            and versions.valid_from <= cast(carried_on.day + 1 as timestamp)
            and cast(carried_on.day + 1 as timestamp) < versions.valid_to
)

select * from final
