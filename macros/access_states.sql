{#- The access state machine (data-contract section 1) over a relation of events: per
    (instance, user), events apply in (occurred_at, event_id) order; revoke -> none,
    grant -> active, and invite -> active if the pair was active (its latest grant/revoke so
    far is a grant), else invited. Adds state_before (the state after the pair's previous
    event; none for its first) and state_after. One sort: all windows share the partition
    and order. Used by int_access_events_sequenced (a view) and int_access_state_intervals,
    which sequences only the pairs it recomputes. -#}
{% macro sequence_access_events(events) %}
with_latest_grant_or_revoke as (
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
    from {{ events }}
),

sequenced as (
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
{% endmacro %}
