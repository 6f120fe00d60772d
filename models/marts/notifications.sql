-- Every notification decided so far, from the notification log kept in the state file.
with

log as (
    select * from {{ ref('stg_state__notification_log') }}
),

final as (
    select
        notification_id,
        org_id,
        plan_id,
        kind,
        as_of_date,
        user_count,
        user_tier,
        recipients,
        status,
        sent_at,
        message_id,
        attempts,
        last_error,
        decided_at
    from log
)

select * from final
