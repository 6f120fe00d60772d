-- The running total follows inactivity: each candidate is at least as inactive as the next,
-- and the last cumulative_users of a plan is its number of candidates.
with

candidates as (
    select * from {{ ref('inactive_user_candidates') }}
),

with_next as (
    select
        *,
        lead(inactive_since) over (partition by plan_id order by cumulative_users)
            as next_inactive_since,
        count(*) over (partition by plan_id) as candidate_count,
        max(cumulative_users) over (partition by plan_id) as last_cumulative_users
    from candidates
),

final as (
    select * from with_next
    where
        next_inactive_since < inactive_since
        or last_cumulative_users <> candidate_count
)

select * from final
