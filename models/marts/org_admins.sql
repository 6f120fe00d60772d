-- One row per organization admin: who receives notifications and the "export is ready"
-- emails for an org (data-contract section 1). Published so that commands run between
-- nightly runs (`usercounts export`) find the recipients in the warehouse they read.
with

admins as (
    select * from {{ ref('stg_landing__org_admins') }}
),

final as (
    select
        org_id,
        email,
        display_name
    from admins
)

select * from final
