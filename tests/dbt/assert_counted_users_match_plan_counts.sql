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

final as (
    select
        current_counts.plan_id,
        current_counts.user_count,
        listed.user_count as listed_user_count
    from current_counts
    left join listed on current_counts.plan_id = listed.plan_id
    where
        coalesce(listed.user_count, 0) <> current_counts.user_count
        or coalesce(listed.invited_count, 0) <> current_counts.invited_count
        or coalesce(listed.billable_count, 0) <> current_counts.billable_count
)

select * from final
