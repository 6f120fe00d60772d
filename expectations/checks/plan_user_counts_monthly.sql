-- Check table of the suite plan_user_counts_monthly: one row of counts over
-- marts.plan_user_counts_monthly (one row per plan and month, no gaps, to the month of D).
with

monthly as (
    select * from marts.plan_user_counts_monthly
),

sequenced as (
    select
        *,
        lag(month) over by_plan as previous_month,
        lag(closing_balance) over by_plan as lagged_closing_balance
    from monthly
    window by_plan as (partition by plan_id order by month)
),

plan_spans as (
    select
        plan_id,
        max(month) as last_month
    from monthly
    group by plan_id
),

rules as (
    select
        count(*) as rows_loaded,
        -- each plan's months in order: a month equal to the one before is a duplicate, a
        -- jump of more than one month a gap
        count(*) filter (where month = previous_month) as duplicate_month_rows,
        count(*) filter (where month > cast(previous_month + interval 1 month as date))
            as month_gap_rows,
        (
            select count(*) from plan_spans
            where last_month <> cast(date_trunc('month', cast($as_of_date as date)) as date)
        ) as plans_not_ending_at_as_of,
        -- fails closed: a missing count is counted, not passed over (null < 0 is null)
        count(*) filter (where (
            closing_balance >= 0 and users_added >= 0 and users_removed >= 0
            and invited_count >= 0 and billable_count >= 0
        ) is not true) as negative_count_rows,
        count(*) filter (where invited_count > closing_balance) as invited_over_closing_rows,
        count(*) filter (where billable_count > closing_balance) as billable_over_closing_rows,
        count(*) filter (where
            coalesce(previous_closing_balance, 0) + users_added - users_removed
            is distinct from closing_balance
        ) as unbalanced_rows,
        count(*) filter (where
            previous_closing_balance is distinct from lagged_closing_balance
        ) as previous_balance_mismatch_rows,
        count(*) filter (where
            change is distinct from closing_balance - previous_closing_balance
        ) as change_mismatch_rows,
        count(*) filter (where
            is_month_complete
            is distinct from (month < cast(date_trunc('month', cast($as_of_date as date)) as date))
        ) as month_complete_mismatch_rows
    from sequenced
)

select * from rules
