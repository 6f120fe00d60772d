-- Two independent computations must agree: the monthly closing balance (runs of membership
-- by month) and the daily user count on the month's closing day (running day deltas).
select
    monthly.plan_id,
    monthly.month,
    monthly.closing_balance,
    daily.user_count
from {{ ref('plan_user_counts_monthly') }} as monthly
inner join {{ ref('plan_user_counts_daily') }} as daily
    on monthly.plan_id = daily.plan_id and monthly.closing_day = daily.day
where monthly.closing_balance <> daily.user_count
