-- One row per plan: its figures at the as-of instant A, the version in force at A, and how
-- close it is to its user tier.
with

plans as (
    select * from {{ ref('int_plans_as_of') }}
),

daily as (
    select * from {{ ref('plan_user_counts_daily') }}
    where day = {{ as_of_date() }}
),

monthly as (
    select * from {{ ref('plan_user_counts_monthly') }}
    where month = cast(date_trunc('month', {{ as_of_date() }}) as date)
),

settings as (
    select * from {{ ref('stg_state__plan_settings') }}
),

counted as (
    select
        plans.org_id,
        plans.plan_id,
        plans.plan_name,
        plans.product_key,
        plans.plan_type,
        plans.billing_cycle,
        plans.renewal_date,
        {{ as_of_instant() }} as as_of,
        coalesce(daily.user_count, 0) as user_count,
        coalesce(daily.invited_count, 0) as invited_count,
        coalesce(monthly.billable_count, 0) as billable_count,
        plans.user_tier,
        coalesce(settings.notify_at_80, true) as notify_at_80
    from plans
    left join daily on plans.plan_id = daily.plan_id
    left join monthly on plans.plan_id = monthly.plan_id
    left join settings on plans.plan_id = settings.plan_id
),

final as (
    select
        org_id,
        plan_id,
        plan_name,
        product_key,
        plan_type,
        billing_cycle,
        renewal_date,
        as_of,
        user_count,
        invited_count,
        billable_count,
        user_count - billable_count as non_billable_count,
        user_tier,
        user_count / user_tier as utilization,
        -- how many must go: to be under 80% (5 * count < 4 * tier), and to be at most the tier
        greatest(0, user_count - (4 * user_tier - 1) // 5) as users_to_remove_for_80,
        greatest(0, user_count - user_tier) as users_to_remove_for_limit,
        case
            when user_count > user_tier then 'over_limit'
            when user_count = user_tier then 'at_limit'
            when 5 * user_count >= 4 * user_tier then 'approaching'
            else 'ok'
        end as threshold_status,
        notify_at_80
    from counted
)

select * from final
