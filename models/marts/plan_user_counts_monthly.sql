-- One row per plan and month, from the plan's first event month to the month of D, with no
-- gaps. A month's closing figures are at the first instant of the next month; for the month
-- of D they are at A and the month is marked incomplete.
with

daily as (
    select * from {{ ref('plan_user_counts_daily') }}
),

memberships as (
    select * from {{ ref('int_plan_memberships_by_month') }}
),

users as (
    select * from {{ ref('stg_landing__users') }}
),

versions as (
    select * from {{ ref('int_plan_versions') }}
),

months as (
    select
        org_id,
        plan_id,
        cast(date_trunc('month', day) as date) as month,
        max(day) as closing_day
    from daily
    group by org_id, plan_id, cast(date_trunc('month', day) as date)
),

-- users_added in month M: runs of membership that start in M; users_removed: runs that
-- ended in the month before M (a run still lasting has no end). Users not in the users
-- files are billable (is_billable defaults to true).
memberships_billable as (
    select
        memberships.plan_id,
        memberships.user_id,
        memberships.first_month,
        memberships.last_month,
        coalesce(users.is_billable, true) as is_billable
    from memberships
    left join users on memberships.user_id = users.user_id
),

movements as (
    select
        plan_id,
        first_month as month,
        1 as added,
        0 as removed,
        case when is_billable then 1 else 0 end as billable_delta
    from memberships_billable

    union all

    select
        plan_id,
        cast(last_month + interval 1 month as date) as month,
        0 as added,
        1 as removed,
        case when is_billable then -1 else 0 end as billable_delta
    from memberships_billable
    where last_month is not null
),

monthly_movements as (
    select
        plan_id,
        month,
        sum(added) as users_added,
        sum(removed) as users_removed,
        sum(billable_delta) as billable_delta
    from movements
    group by plan_id, month
),

balances as (
    select
        months.org_id,
        months.plan_id,
        months.month,
        months.closing_day,
        coalesce(monthly_movements.users_added, 0) as users_added,
        coalesce(monthly_movements.users_removed, 0) as users_removed,
        sum(
            coalesce(monthly_movements.users_added, 0)
            - coalesce(monthly_movements.users_removed, 0)
        ) over by_month as closing_balance,
        sum(coalesce(monthly_movements.billable_delta, 0)) over by_month as billable_count
    from months
    left join monthly_movements
        on months.plan_id = monthly_movements.plan_id and months.month = monthly_movements.month
    window by_month as (
        partition by months.plan_id order by months.month
        rows between unbounded preceding and current row
    )
),

with_previous as (
    select
        *,
        lag(closing_balance) over (partition by plan_id order by month)
            as previous_closing_balance
    from balances
),

final as (
    select
        with_previous.org_id,
        with_previous.plan_id,
        with_previous.month,
        cast(with_previous.closing_balance as bigint) as closing_balance,
        cast(with_previous.previous_closing_balance as bigint) as previous_closing_balance,
        cast(with_previous.closing_balance - with_previous.previous_closing_balance as bigint)
            as change,
        (with_previous.closing_balance - with_previous.previous_closing_balance)
        / nullif(with_previous.previous_closing_balance, 0) as change_pct,
        cast(with_previous.users_added as bigint) as users_added,
        cast(with_previous.users_removed as bigint) as users_removed,
        daily.invited_count,
        cast(with_previous.billable_count as bigint) as billable_count,
        versions.user_tier,
        with_previous.month < cast(date_trunc('month', {{ as_of_date() }}) as date)
            as is_month_complete,
        with_previous.closing_day
    from with_previous
    inner join daily
        on with_previous.plan_id = daily.plan_id and with_previous.closing_day = daily.day
    inner join versions
        on with_previous.plan_id = versions.plan_id
            and versions.valid_from <= cast(with_previous.closing_day + 1 as timestamp)
            and cast(with_previous.closing_day + 1 as timestamp) < versions.valid_to
)

select * from final
