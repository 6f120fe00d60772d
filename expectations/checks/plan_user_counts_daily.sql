-- Check table of the suite plan_user_counts_daily: one row of counts over
-- marts.plan_user_counts_daily (one row per plan and day, first event day to the as-of date).
with

daily as (
    select * from marts.plan_user_counts_daily
),

sequenced as (
    select
        *,
        lag(day) over (partition by plan_id order by day) as previous_day
    from daily
),

plan_spans as (
    select
        plan_id,
        max(day) as last_day
    from daily
    group by plan_id
),

rules as (
    select
        count(*) as rows_loaded,
        -- each plan's days in order: a day equal to the one before is a duplicate, a jump
        -- of more than one day a gap
        count(*) filter (where day = previous_day) as duplicate_day_rows,
        count(*) filter (where day > previous_day + 1) as day_gap_rows,
        (
            select count(*) from plan_spans
            where last_day <> cast($as_of_date as date)
        ) as plans_not_ending_at_as_of,
        -- fails closed: a missing count is counted, not passed over (null < 0 is null)
        count(*) filter (where (user_count >= 0 and invited_count >= 0) is not true)
            as negative_count_rows,
        count(*) filter (where user_tier is null or user_tier <= 0) as non_positive_tier_rows,
        count(*) filter (where invited_count > user_count) as invited_over_user_count_rows
    from sequenced
)

select * from rules
