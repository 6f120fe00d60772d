-- Check table of the suite plan_user_counts_current: one row of counts over
-- marts.plan_user_counts_current (one row per plan, its figures at the as-of instant).
with

current_counts as (
    select * from marts.plan_user_counts_current
),

plans as (
    select distinct plan_id from staging.stg_landing__plans
),

daily_at_as_of as (
    select * from marts.plan_user_counts_daily
    where day = cast($as_of_date as date)
),

rules as (
    select
        count(*) as rows_loaded,
        count(*) - count(distinct plan_id) as duplicate_plan_rows,
        (
            select count(*) from plans
            where plan_id not in (select plan_id from current_counts)
        ) as missing_plans,
        -- fails closed: a missing count is counted, not passed over (null < 0 is null)
        count(*) filter (where (
            user_count >= 0 and invited_count >= 0 and billable_count >= 0
            and non_billable_count >= 0
        ) is not true) as negative_count_rows,
        count(*) filter (where user_tier is null or user_tier <= 0) as non_positive_tier_rows,
        count(*) filter (where invited_count > user_count) as invited_over_user_count_rows,
        count(*) filter (where billable_count > user_count) as billable_over_user_count_rows,
        count(*) filter (where
            utilization is null or abs(utilization - user_count / user_tier) > 1e-9
        ) as utilization_mismatch_rows,
        count(*) filter (where
            threshold_status is distinct from case
                when user_count > user_tier then 'over_limit'
                when user_count = user_tier then 'at_limit'
                when 5 * user_count >= 4 * user_tier then 'approaching'
                else 'ok'
            end
        ) as threshold_status_mismatch_rows,
        (
            select count(*) from current_counts
            inner join daily_at_as_of on current_counts.plan_id = daily_at_as_of.plan_id
            where current_counts.user_count <> daily_at_as_of.user_count
            or current_counts.invited_count <> daily_at_as_of.invited_count
        ) as daily_mismatch_rows
    from current_counts
)

select * from rules
