-- Per plan, the users counted there who have been inactive for N days or more at the as-of
-- date D (N: var inactive_days): last seen N or more days before D on every instance of the
-- plan they have had access to (one left since included), or never seen (or seen only before
-- their current access to the plan began) and with access to it for N or more days
-- (counted_users.inactive_since). Most inactive first; cumulative_users is the running total,
-- to read against plan_user_counts_current.users_to_remove_for_80 / _for_limit.
with

users as (
    select * from {{ ref('counted_users') }}
),

candidates as (
    select * from users
    where days_inactive >= {{ inactive_days() }}
),

final as (
    select
        org_id,
        plan_id,
        user_id,
        email,
        display_name,
        access_status,
        row_number() over (partition by plan_id order by inactive_since, user_id)
            as cumulative_users,
        days_since_last_seen,
        days_inactive,
        {{ inactive_days() }} as inactive_days,
        is_billable,
        access_since,
        last_seen_at,
        inactive_since
    from candidates
)

select * from final
