-- users_to_remove_for_80 is the fewest removals that bring a plan under 80% of its tier
-- (5 * (user_count - n) < 4 * user_tier), and users_to_remove_for_limit the fewest that
-- bring it to at most the tier: removing one fewer would not be enough.
with

current_counts as (
    select * from {{ ref('plan_user_counts_current') }}
),

final as (
    select
        plan_id,
        user_count,
        user_tier,
        users_to_remove_for_80,
        users_to_remove_for_limit
    from current_counts
    where
        users_to_remove_for_80 is null
        or users_to_remove_for_limit is null
        or users_to_remove_for_80 not between 0 and user_count
        or users_to_remove_for_limit not between 0 and users_to_remove_for_80
        or 5 * (user_count - users_to_remove_for_80) >= 4 * user_tier
        or (
            users_to_remove_for_80 > 0
            and 5 * (user_count - users_to_remove_for_80 + 1) < 4 * user_tier
        )
        or user_count - users_to_remove_for_limit > user_tier
        or (
            users_to_remove_for_limit > 0
            and user_count - users_to_remove_for_limit + 1 <= user_tier
        )
)

select * from final
