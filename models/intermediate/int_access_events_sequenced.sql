{{ config(
    materialized='incremental',
    unique_key='event_id',
    incremental_strategy='delete+insert',
) }}
-- depends_on: {{ ref('int_access_pairs_changed') }}
-- The access state machine (data-contract section 1): per (instance, user), events apply in
-- (occurred_at, event_id) order. revoke -> none, grant -> active, and invite -> active if
-- the pair was active (its latest grant/revoke so far is a grant), else invited.
-- state_before is the state after the pair's previous event (none for its first).
-- Incremental: the events of the pairs in int_access_pairs_changed are sequenced again.
with

events as (
    select events.*
    from {{ ref('stg_landing__access_events') }} as events
    {%- if is_incremental() %}
        inner join {{ ref('int_access_pairs_changed') }} as changed
            on events.instance_id = changed.instance_id and events.user_id = changed.user_id
    {%- endif %}
),

with_latest_grant_or_revoke as (
    -- one sort for all four: the same partition and order
    select
        *,
        last_value(case when action <> 'invite' then action end ignore nulls) over (
            partition by instance_id, user_id
            order by occurred_at, event_id
            rows between unbounded preceding and current row
        ) as latest_grant_or_revoke,
        last_value(case when action <> 'invite' then action end ignore nulls) over (
            partition by instance_id, user_id
            order by occurred_at, event_id
            rows between unbounded preceding and 1 preceding
        ) as earlier_grant_or_revoke,
        lag(action) over (
            partition by instance_id, user_id order by occurred_at, event_id
        ) as previous_action
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
            when previous_action is null or previous_action = 'revoke' then 'none'
            when previous_action = 'grant' then 'active'
            when earlier_grant_or_revoke = 'grant' then 'active'
            else 'invited'
        end as state_before,
        case
            when action = 'revoke' then 'none'
            when action = 'grant' then 'active'
            when latest_grant_or_revoke = 'grant' then 'active'
            else 'invited'
        end as state_after
    from with_latest_grant_or_revoke
)

select * from final
