{{ config(
    materialized='incremental',
    unique_key=['instance_id', 'user_id', 'valid_from'],
    incremental_strategy='append',
    pre_hook="{{ delete_changed('int_access_pairs_changed', ['instance_id', 'user_id']) }}",
) }}
-- depends_on: {{ ref('int_access_pairs_changed') }}
-- Per (instance, user): the spans in which the pair is invited or active. A span holds for
-- the instants t with valid_from < t <= valid_to (a count at t sees events before t);
-- valid_to is null while it lasts. Spans that open and close at one instant are dropped.
-- access_since is the start of the unbroken run of access the span belongs to.
-- The states come from the state machine (macros/access_states.sql, as in
-- int_access_events_sequenced). Incremental: the pairs in int_access_pairs_changed are
-- deleted and computed again from their events.
with

events as (
    select events.*
    from {{ ref('stg_landing__access_events') }} as events
    {%- if is_incremental() %}
        inner join {{ ref('int_access_pairs_changed') }} as changed
            on events.instance_id = changed.instance_id and events.user_id = changed.user_id
    {%- endif %}
),

{{ sequence_access_events('events') }},

state_changes as (
    select * from sequenced
    where state_after <> state_before
),

spans as (
    select
        instance_id,
        user_id,
        state_after as state,
        occurred_at as valid_from,
        lead(occurred_at) over (
            partition by instance_id, user_id order by occurred_at, event_id
        ) as valid_to
    from state_changes
),

lasting_spans as (
    select * from spans
    where valid_to is null or valid_to > valid_from
),

-- Access is unbroken from the end of the latest lasting span without access (or from the
-- pair's first lasting span): same-instant changes leave no instant without access.
with_access_since as (
    select
        *,
        coalesce(
            last_value(case when state = 'none' then valid_to end ignore nulls) over (
                partition by instance_id, user_id
                order by valid_from
                rows between unbounded preceding and current row
            ),
            first_value(valid_from) over (
                partition by instance_id, user_id
                order by valid_from
                rows between unbounded preceding and current row
            )
        ) as access_since
    from lasting_spans
),

final as (
    select
        instance_id,
        user_id,
        state,
        valid_from,
        valid_to,
        access_since
    from with_access_since
    where state <> 'none'
)

select * from final
