-- The notifications due for the as-of date D (data-contract section 4), one row per plan
-- and kind, that the notify step records and sends. The log snapshot says what was already
-- decided (see DECISIONLOG.md for which log rows count).
with

current_counts as (
    select * from {{ ref('plan_user_counts_current') }}
),

daily as (
    select * from {{ ref('plan_user_counts_daily') }}
),

notification_log as (
    select * from {{ ref('stg_state__notification_log') }}
),

-- The latest day <= D whose user_count was below that day's tier. The daily mart starts at
-- the plan's first event day; the day before it the count was 0, below any tier.
last_below_tier_days as (
    select
        plan_id,
        coalesce(
            max(case when user_count < user_tier then day end),
            min(day) - 1
        ) as last_below_tier_day
    from daily
    where day <= {{ as_of_date() }}
    group by plan_id
),

candidates as (
    select
        *,
        'tier_80' as kind
    from current_counts
    where
        billing_cycle = 'annual'
        and notify_at_80
        and 5 * user_count >= 4 * user_tier

    union all

    select
        *,
        'tier_limit' as kind
    from current_counts
    where user_count >= user_tier
),

-- Log rows that stop a new notification of the same plan and kind: one still unsent (it is
-- retried instead), a tier_80 for an as-of date in D-29 .. D, a tier_limit since the plan
-- was last below its tier.
blocked as (
    select distinct
        candidates.plan_id,
        candidates.kind
    from candidates
    inner join notification_log
        on
            candidates.plan_id = notification_log.plan_id
            and candidates.kind = notification_log.kind
    left join last_below_tier_days
        on candidates.plan_id = last_below_tier_days.plan_id
    where
        notification_log.status in ('pending', 'failed')
        or (
            candidates.kind = 'tier_80'
            and notification_log.as_of_date
            between {{ as_of_date() }} - 29 and {{ as_of_date() }}
        )
        or (
            candidates.kind = 'tier_limit'
            and notification_log.as_of_date > last_below_tier_days.last_below_tier_day
        )
),

not_yet_notified as (
    select candidates.*
    from candidates
    left join blocked
        on candidates.plan_id = blocked.plan_id and candidates.kind = blocked.kind
    where blocked.plan_id is null
),

identified as (
    select
        md5(plan_id || '|' || kind || '|' || cast({{ as_of_date() }} as varchar))
            as notification_id,
        *
    from not_yet_notified
),

final as (
    select
        notification_id,
        -- deterministic, so that a re-sent message folds into the first one in mail clients
        '<' || notification_id || '@usercounts>' as message_id,
        org_id,
        plan_id,
        plan_name,
        product_key,
        plan_type,
        billing_cycle,
        kind,
        threshold_status,
        user_count,
        user_tier,
        users_to_remove_for_80,
        users_to_remove_for_limit,
        utilization,
        {{ as_of_date() }} as as_of_date
    from identified
)

select * from final
