{{ config(
    materialized='incremental',
    unique_key=['plan_id', 'user_id', 'first_month'],
    incremental_strategy='append',
    pre_hook="{{ delete_changed('int_access_pairs_changed', ['user_id']) }}",
) }}
-- depends_on: {{ ref('int_access_pairs_changed') }}
-- Per (plan, user): unbroken runs of months in whose closing set the user is. Month M's
-- closing day is its last day, or D for the month of D. A run starts in the month the user
-- is added and ends in the month before the one the user is removed in; last_month is null
-- while the run lasts (it reaches the month of D, whichever D: the marts apply D).
-- Incremental: every plan of each user in int_access_pairs_changed is computed again.
with

segments as (
    select * from {{ ref('int_access_intervals_merged_to_plans') }}
    {%- if is_incremental() %}
        where user_id in (
                select changed.user_id from {{ ref('int_access_pairs_changed') }} as changed
            )
    {%- endif %}
),

month_ranges as (
    -- a segment still lasting covers every month from its first
    select
        plan_id,
        user_id,
        cast(date_trunc('month', first_day) as date) as first_month,
        case
            when last_day is null then cast('infinity' as date)
            when last_day = last_day(last_day)
                then cast(date_trunc('month', last_day) as date)
            else cast(date_trunc('month', last_day) - interval 1 month as date)
        end as last_month
    from segments
),

covering as (
    select * from month_ranges
    where first_month <= last_month
),

with_run_starts as (
    select
        *,
        coalesce(
            first_month > max(last_month) over (
                partition by plan_id, user_id order by first_month, last_month
                rows between unbounded preceding and 1 preceding
            ) + interval 1 month,
            true
        ) as starts_run
    from covering
),

with_run_ids as (
    select
        *,
        sum(case when starts_run then 1 else 0 end) over (
            partition by plan_id, user_id order by first_month, last_month
            rows between unbounded preceding and current row
        ) as run_id
    from with_run_starts
),

runs as (
    select
        plan_id,
        user_id,
        min(first_month) as first_month,
        max(last_month) as last_month
    from with_run_ids
    group by plan_id, user_id, run_id
),

final as (
    select
        plan_id,
        user_id,
        first_month,
        nullif(last_month, cast('infinity' as date)) as last_month
    from runs
)

select * from final
