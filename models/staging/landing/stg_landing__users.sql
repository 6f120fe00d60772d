-- One row per user: the latest file wins per user_id (data-contract section 1).
with

users as (
    select * from {{ ref('base_landing__users') }}
    where quarantine_reason is null
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by user_id order by file_name desc, row_number desc
        ) as recency
    from users
),

final as (
    select
        user_id,
        email,
        display_name,
        account_type,
        coalesce(is_billable, true) as is_billable
    from deduplicated
    where recency = 1
)

select * from final
