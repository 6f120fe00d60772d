-- One row per plan: where its user count is heading, when it reaches 80% of its tier and the
-- tier itself, and which tier of the ladder (seed tier_ladder) it needs at renewal.
--
-- Method (DECISIONLOG.md, "Capacity forecast"): the trend is the least-squares slope of the
-- month-end closing balances of the last 6 complete months, in users per month. The
-- projection starts from the count at the as-of instant A and goes on at that slope, a
-- month being 365.25 / 12 = 30.4375 days. Day d's projected figure is at d + 1 day 00:00,
-- as in plan_user_counts_daily, so "day D + n" is n days of trend after A.
{%- set as_of_month = "cast(" ~ dbt.date_trunc("month", as_of_date()) ~ " as date)" %}
{%- set window_start = "cast(" ~ dbt.dateadd("month", -6, as_of_month) ~ " as date)" %}

with

current_counts as (
    select * from {{ ref('plan_user_counts_current') }}
),

monthly as (
    select * from {{ ref('plan_user_counts_monthly') }}
),

ladder as (
    select * from {{ ref('tier_ladder') }}
),

-- the last 6 complete months; x = 0 for the last of them, -1 for the one before, ... -5
trend_points as (
    select
        plan_id,
        month,
        closing_balance,
        {{ dbt.datediff(as_of_month, "month", "month") }} + 1 as month_index  -- noqa: LT05
    from monthly
    where is_month_complete and month >= {{ window_start }}
),

fits as (
    select
        plan_id,
        count(*) as trend_months,
        min(month) as trend_first_month,
        max(month) as trend_last_month,
        avg(closing_balance) as mean_balance,
        regr_slope(closing_balance, month_index) as slope,
        regr_r2(closing_balance, month_index) as r2,
        -- the residual sum of squares, Syy - Sxy^2 / Sxx
        regr_syy(closing_balance, month_index)
        - regr_sxy(closing_balance, month_index) * regr_sxy(closing_balance, month_index)
        / nullif(regr_sxx(closing_balance, month_index), 0) as residual_sum_of_squares
    from trend_points
    group by plan_id
),

-- a line needs two points; r-squared and the scatter need a third to mean anything
trends as (
    select
        plan_id,
        trend_months,
        trend_first_month,
        trend_last_month,
        mean_balance,
        case when trend_months >= 2 then round(slope, 4) end as trend_users_per_month,
        case when trend_months >= 3 then round(r2, 4) end as trend_r2,
        case
            when trend_months >= 3
                then round(sqrt(greatest(0, residual_sum_of_squares) / (trend_months - 2)), 2)
        end as trend_residual_sd
    from fits
),

-- no trend (fewer than 2 complete months): the count is assumed to stay as it is
plans_with_trends as (
    select
        current_counts.org_id,
        current_counts.plan_id,
        current_counts.plan_name,
        current_counts.product_key,
        current_counts.plan_type,
        current_counts.billing_cycle,
        current_counts.threshold_status,
        current_counts.user_count,
        current_counts.user_tier,
        -- the smallest whole count at 80% (5 * count >= 4 * tier, data contract section 3)
        (4 * current_counts.user_tier + 4) // 5 as users_at_80,
        coalesce(trends.trend_months, 0) as trend_months,
        trends.trend_users_per_month,
        coalesce(trends.trend_users_per_month, 0) / 30.4375 as users_per_day,
        trends.trend_r2,
        trends.trend_residual_sd,
        trends.mean_balance,
        {{ as_of_date() }} as as_of_date,
        current_counts.renewal_date,
        trends.trend_first_month,
        trends.trend_last_month,
        {{ dbt.datediff(as_of_date(), "current_counts.renewal_date", "day") }}
            as days_to_renewal
    from current_counts
    left join trends on current_counts.plan_id = trends.plan_id
),

projected as (
    select
        *,
        -- rounded down to a tenth, so that it reads as a whole count (80%, the tier) only
        -- once the line has reached it, as the crossing dates below say (31.97 is 31.9)
        case
            when days_to_renewal >= 0
                then
                    floor(
                        round(greatest(0, user_count + users_per_day * days_to_renewal), 6) * 10
                    ) / 10
        end as projected_user_count_at_renewal,
        -- whole days until the line reaches a count; rounded first so 167.9999999 is 168
        case
            when users_per_day > 0 and user_count < users_at_80
                then cast(ceil(round((users_at_80 - user_count) / users_per_day, 6)) as bigint)
        end as days_to_80,
        case
            when users_per_day > 0 and user_count < user_tier
                then cast(ceil(round((user_tier - user_count) / users_per_day, 6)) as bigint)
        end as days_to_limit,
        case
            when trend_months < 3 then 'short_history'
            when
                trend_r2 < 0.5 and trend_residual_sd > greatest(1, 0.05 * mean_balance)
                then 'noisy'
            else 'ok'
        end as confidence
    from plans_with_trends
),

-- dates more than 1826 days (5 years) out say nothing a 6-month trend can support
with_dates as (
    select
        *,
        case
            when days_to_80 <= 1826
                then cast({{ dbt.dateadd("day", "days_to_80", "as_of_date") }} as date)
        end as projected_80_date,
        case
            when days_to_limit <= 1826
                then cast({{ dbt.dateadd("day", "days_to_limit", "as_of_date") }} as date)
        end as projected_limit_date
    from projected
),

-- the smallest tier of the product's ladder that holds the projected count rounded up
recommended as (
    select
        projected.plan_id,
        count(ladder.user_tier) as ladder_tiers,
        min(
            case
                when ladder.user_tier >= ceil(projected.projected_user_count_at_renewal)
                    then ladder.user_tier
            end
        ) as recommended_tier
    from projected
    left join ladder on projected.product_key = ladder.product_key
    group by projected.plan_id
),

classified as (
    select
        with_dates.*,
        recommended.recommended_tier,
        case
            when with_dates.projected_user_count_at_renewal is null then 'no_projection'
            when recommended.ladder_tiers = 0 then 'no_ladder'
            when recommended.recommended_tier is null then 'above_ladder'
            else 'on_ladder'
        end as recommended_tier_status,
        case
            when with_dates.threshold_status != 'ok' then with_dates.threshold_status
            when
                with_dates.projected_limit_date <= with_dates.renewal_date
                then 'crosses_limit_before_renewal'
            when
                with_dates.projected_80_date <= with_dates.renewal_date
                then 'crosses_80_before_renewal'
            else 'ok'
        end as urgency
    from with_dates
    inner join recommended on with_dates.plan_id = recommended.plan_id
),

final as (
    select
        org_id,
        plan_id,
        plan_name,
        product_key,
        plan_type,
        billing_cycle,
        threshold_status,
        confidence,
        case
            when trend_months = 0
                then 'No complete month of history: no trend; '
                    || 'the projection assumes the count stays as it is.'
            when trend_months = 1
                then 'Only 1 complete month of history: no trend; '
                    || 'the projection assumes the count stays as it is.'
            when trend_months = 2
                then 'Only 2 complete months of history: the trend is a line through two points.'
            when confidence = 'noisy'
                then 'Noisy history: the month-end balances scatter around the trend (r² '
                    || cast(round(trend_r2, 2) as varchar) || ', typically '
                    || cast(round(trend_residual_sd, 1) as varchar) || ' users off the line).'
            else 'Trend over ' || cast(trend_months as varchar) || ' complete months.'
        end as confidence_note,
        recommended_tier_status,
        urgency,
        user_count,
        user_tier,
        users_at_80,
        trend_months,
        trend_users_per_month,
        trend_r2,
        trend_residual_sd,
        projected_user_count_at_renewal,
        recommended_tier,
        case urgency
            when 'over_limit' then 1
            when 'at_limit' then 2
            when 'approaching' then 3
            when 'crosses_limit_before_renewal' then 4
            when 'crosses_80_before_renewal' then 5
            else 6
        end as urgency_rank,
        user_count >= users_at_80 as has_reached_80,
        user_count >= user_tier as has_reached_limit,
        as_of_date,
        renewal_date,
        trend_first_month,
        trend_last_month,
        projected_80_date,
        projected_limit_date
    from classified
)

select * from final
