-- Check table of the suite user_last_seen: one row of counts over marts.user_last_seen
-- (one row per plan, instance and user with access at the as-of instant).
with

last_seen as (
    select * from marts.user_last_seen
),

current_counts as (
    select * from marts.plan_user_counts_current
),

users_per_plan as (
    select
        plan_id,
        count(distinct user_id) as users
    from last_seen
    group by plan_id
),

count_mismatches as (
    select coalesce(current_counts.plan_id, users_per_plan.plan_id) as plan_id
    from current_counts
    full outer join users_per_plan on current_counts.plan_id = users_per_plan.plan_id
    where coalesce(current_counts.user_count, 0) <> coalesce(users_per_plan.users, 0)
),

rules as (
    select
        count(*) as rows_loaded,
        count(*) - count(distinct (plan_id, instance_id, user_id)) as duplicate_rows,
        count(*) filter (where access_status is null or access_status not in ('invited', 'active'))
            as unknown_status_rows,
        count(*) filter (where days_since_last_seen < 0) as negative_days_rows,
        (select count(*) from count_mismatches) as plans_with_count_mismatch,
        count(*) filter (where email is null and display_name is null) as users_without_profile_rows
    from last_seen
)

select * from rules
