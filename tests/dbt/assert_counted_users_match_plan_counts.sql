-- counted_users lists exactly the users plan_user_counts_current counts: per plan the same
-- number of users, of invited users and of billable users.
with

counted_users as (
    select * from {{ ref('counted_users') }}
),

current_counts as (
    select * from {{ ref('plan_user_counts_current') }}
),

listed as (
    select
        plan_id,
        count(*) as user_count,
        count(*) filter (where access_status = 'invited') as invited_count,
        count(*) filter (where is_billable) as billable_count
    from counted_users
    group by plan_id
),

-- Compared both ways: a plan listed in counted_users but missing from the current counts
-- fails too.
final as (
    select
        coalesce(current_counts.plan_id, listed.plan_id) as plan_id,
        current_counts.user_count,
        listed.user_count as listed_user_count
    from current_counts
    full outer join listed on current_counts.plan_id = listed.plan_id
    where
        coalesce(listed.user_count, 0) <> coalesce(current_counts.user_count, 0)
        or coalesce(listed.invited_count, 0) <> coalesce(current_counts.invited_count, 0)
        or coalesce(listed.billable_count, 0) <> coalesce(current_counts.billable_count, 0)
)

select * from final
