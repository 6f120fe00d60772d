-- One row per (org, admin email); addresses compare case-insensitively.
with

admins as (
    select * from {{ ref('base_landing__org_admins') }}
    where quarantine_reason is null
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by org_id, lower(email) order by file_name desc, row_number desc
        ) as recency
    from admins
),

final as (
    select
        org_id,
        email,
        display_name
    from deduplicated
    where recency = 1
)

select * from final
