-- Every plan's months run from its first event month to the month of D with no gaps.
with

months as (
    select
        plan_id,
        month,
        lag(month) over (partition by plan_id order by month) as previous_month
    from {{ ref('plan_user_counts_monthly') }}
),

bounds as (
    select
        plan_id,
        max(month) as last_month
    from {{ ref('plan_user_counts_monthly') }}
    group by plan_id
)

select months.plan_id, months.month, months.previous_month
from months
where months.previous_month is not null
    and months.month <> cast(months.previous_month + interval 1 month as date)

union all

select bounds.plan_id, bounds.last_month, null
from bounds
where bounds.last_month <> cast(date_trunc('month', {{ as_of_date() }}) as date)
