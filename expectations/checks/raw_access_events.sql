-- Check table of the suite raw_access_events: one row of counts over raw.access_events.
-- The row rules are those of models/staging/landing/base/base_landing__access_events.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
with

events as (
    select
        present(event_id) as event_id,
        present(occurred_at) as occurred_at_text,
        try_cast(present(occurred_at) as timestamptz) as occurred_at,
        present(instance_id) as instance_id,
        present(user_id) as user_id,
        lower(present(action)) as action
    from raw.access_events
),

instances as (
    select distinct present(instance_id) as instance_id
    from raw.instances
    where present(instance_id) is not null and present(plan_id) is not null
),

flagged as (
    select
        *,
        event_id is null as is_missing_event_id,
        occurred_at_text is null as is_missing_occurred_at,
        occurred_at_text is not null and occurred_at is null as is_unparseable_occurred_at,
        instance_id is null as is_missing_instance_id,
        user_id is null as is_missing_user_id,
        action is null as is_missing_action,
        coalesce(action not in ('invite', 'grant', 'revoke'), false) as is_unknown_action
    from events
),

checked as (
    select
        *,
        is_missing_event_id or is_missing_occurred_at or is_unparseable_occurred_at
        or is_missing_instance_id or is_missing_user_id or is_missing_action
        or is_unknown_action as is_quarantined
    from flagged
),

-- Rows sharing an event_id are one event; ids whose rows disagree are reported.
repeated_ids as (
    select event_id
    from checked
    where not is_quarantined
    group by event_id
    having count(*) > 1
),

conflicting_ids as (
    select event_id
    from checked
    where not is_quarantined and event_id in (select event_id from repeated_ids)
    group by event_id
    having count(distinct (occurred_at, instance_id, user_id, action)) > 1
),

rules as (
    select
        count(*) as rows_loaded,
        count(*) filter (where is_missing_event_id) as missing_event_id_rows,
        count(*) filter (where is_missing_occurred_at) as missing_occurred_at_rows,
        count(*) filter (where is_unparseable_occurred_at) as unparseable_occurred_at_rows,
        count(*) filter (where is_missing_instance_id) as missing_instance_id_rows,
        count(*) filter (where is_missing_user_id) as missing_user_id_rows,
        count(*) filter (where is_missing_action) as missing_action_rows,
        count(*) filter (where is_unknown_action) as unknown_action_rows,
        count(*) filter (where is_quarantined) as failed_rule_rows,
        count(*) filter (where
            not is_quarantined and instance_id not in (select instance_id from instances)
        ) as unknown_instance_rows,
        (select count(*) from conflicting_ids) as conflicting_event_ids
    from checked
)

select * from raw_check_table(
    'rules',
    'access_events',
    ['event_id', 'occurred_at', 'instance_id', 'user_id', 'action']
)
