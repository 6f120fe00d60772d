-- Check table of the suite user_last_seen: one row of counts over marts.user_last_seen
-- (one row per plan, instance and user with access at the as-of instant).
with

last_seen as (
    select * from marts.user_last_seen
),

current_counts as (
    select * from marts.plan_user_counts_current
),

users as (
    select user_id from staging.stg_landing__users
),

-- Rows of users the users files lack. The mart leaves their email and name empty, but a users
-- row may leave both blank too (an app account): those users are in the files. Filtering on
-- the empty fields first keeps the join to the few rows that can be missing.
rows_without_profile as (
    select last_seen.user_id
    from last_seen
    anti join users on last_seen.user_id = users.user_id
    where last_seen.email is null and last_seen.display_name is null
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
        (select count(*) from rows_without_profile) as users_without_profile_rows
    from last_seen
)

select * from rules
