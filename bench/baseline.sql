-- The hand-written baseline: month-end closing balances per plan, straight from the landing
-- files, in one DuckDB script (no dbt, no working database). It follows the data contract
-- on its own: valid rows only, the first read of an event_id wins, the latest instances file
-- wins, the state table per (instance, user), counts at the first instant of the next month
-- (at A for the month of D). Parameters: $plans, $instances, $events (lists of Parquet
-- files in path order) and $as_of_date; the session's time zone is UTC. Result: plan_id,
-- month, closing_balance (months with a closing balance above 0).
create or replace temp table baseline_closing_balances as
with

declared_plans as (
    select distinct trim(plan_id) as plan_id
    from read_parquet($plans)
    where nullif(trim(plan_id), '') is not null
),

instance_rows as (
    select
        trim(instance_id) as instance_id,
        trim(plan_id) as plan_id,
        filename,
        file_row_number
    from read_parquet($instances, filename = true, file_row_number = true)
    where nullif(trim(instance_id), '') is not null and nullif(trim(plan_id), '') is not null
),

instances as (
    select instance_id, plan_id
    from instance_rows
    qualify row_number() over (
        partition by instance_id order by filename desc, file_row_number desc
    ) = 1
),

event_rows as (
    select
        trim(event_id) as event_id,
        trim(instance_id) as instance_id,
        trim(user_id) as user_id,
        lower(trim(action)) as action,
        try_cast(occurred_at as timestamp) as occurred_at,
        filename,
        file_row_number
    from read_parquet($events, filename = true, file_row_number = true)
),

events as (
    select event_id, instance_id, user_id, action, occurred_at
    from event_rows
    where nullif(event_id, '') is not null
        and nullif(instance_id, '') is not null
        and nullif(user_id, '') is not null
        and action in ('invite', 'grant', 'revoke')
        and occurred_at is not null
    qualify row_number() over (partition by event_id order by filename, file_row_number) = 1
),

-- has access after each event: revoke -> no; grant -> yes; invite -> yes (invited or, if
-- the latest grant/revoke was a grant, active): only "has access" matters for the count
visible as (
    select * from events
    where occurred_at < $as_of_date::date + interval 1 day
),

access_after as (
    select
        instance_id,
        user_id,
        event_id,
        occurred_at,
        action <> 'revoke' as has_access
    from visible
),

flips as (
    select
        *,
        coalesce(
            lag(has_access) over (
                partition by instance_id, user_id order by occurred_at, event_id
            ),
            false
        ) as had_access
    from access_after
),

spans as (
    -- access for the instants t with gained_at < t <= lost_at (lost_at null: still)
    select
        instance_id,
        user_id,
        has_access,
        occurred_at as gained_at,
        lead(occurred_at) over (
            partition by instance_id, user_id order by occurred_at, event_id
        ) as lost_at
    from flips
    where has_access <> had_access
),

month_ranges as (
    -- the months whose closing instant a span covers, as one range: complete months M
    -- (closing at the first instant of M + 1) and, for a span still open, the month of D
    -- (closing at A). Distinct: the windows below order by the range, so equal ranges (a
    -- user on two instances of a plan) would be ordered differently by each window.
    select distinct
        instances.plan_id,
        spans.user_id,
        cast(date_trunc('month', spans.gained_at) as date) as first_month,
        case
            when spans.lost_at is null then cast(date_trunc('month', $as_of_date::date) as date)
            else cast(least(
                date_trunc('month', spans.lost_at) - interval 1 month,
                date_trunc('month', $as_of_date::date) - interval 1 month
            ) as date)
        end as last_month
    from spans
    inner join instances on spans.instance_id = instances.instance_id
    inner join declared_plans on instances.plan_id = declared_plans.plan_id
    where spans.has_access
),

-- a user counts once per plan: merge each user's overlapping or adjacent ranges
range_starts as (
    select
        *,
        coalesce(first_month > max(last_month) over (
            partition by plan_id, user_id order by first_month, last_month
            rows between unbounded preceding and 1 preceding
        ) + interval 1 month, true) as starts_run
    from month_ranges
    where first_month <= last_month
),

runs as (
    select
        plan_id,
        user_id,
        min(first_month) as first_month,
        max(last_month) as last_month
    from (
        select
            *,
            sum(starts_run::int) over (
                partition by plan_id, user_id order by first_month, last_month
                rows between unbounded preceding and current row
            ) as run_id
        from range_starts
    )
    group by plan_id, user_id, run_id
),

deltas as (
    select plan_id, first_month as month, count(*) as delta from runs group by all
    union all
    select plan_id, cast(last_month + interval 1 month as date), -count(*) from runs group by all
),

plan_months as (
    select plan_id, cast(unnest(generate_series(
        min(month), cast(date_trunc('month', $as_of_date::date) as date), interval 1 month
    )) as date) as month
    from deltas
    group by plan_id
),

balances as (
    select
        plan_months.plan_id,
        plan_months.month,
        sum(coalesce(month_deltas.delta, 0)) over (
            partition by plan_months.plan_id order by plan_months.month
            rows between unbounded preceding and current row
        ) as closing_balance
    from plan_months
    left join (
        select plan_id, month, sum(delta) as delta from deltas group by all
    ) as month_deltas
        on plan_months.plan_id = month_deltas.plan_id and plan_months.month = month_deltas.month
)

select plan_id, month, closing_balance
from balances
where closing_balance > 0;
