-- The access state machine (data-contract section 1): per (instance, user), events apply in
-- (occurred_at, event_id) order. revoke -> none, grant -> active, and invite -> active if
-- the pair was active (its latest grant/revoke so far is a grant), else invited.
with

events as (
    select * from {{ ref('stg_landing__access_events') }}
),

with_latest_grant_or_revoke as (
    select
        *,
        last_value(case when action <> 'invite' then action end ignore nulls) over (
            partition by instance_id, user_id
            order by occurred_at, event_id
            rows between unbounded preceding and current row
        ) as latest_grant_or_revoke
    from events
),

final as (
    select
        instance_id,
        user_id,
        event_id,
        action,
        occurred_at,
        case
            when action = 'revoke' then 'none'
            when action = 'grant' then 'active'
            when latest_grant_or_revoke = 'grant' then 'active'
            else 'invited'
        end as state_after
    from with_latest_grant_or_revoke
)

select * from final
