-- Check table of the suite raw_access_events: one row of counts over raw.access_events.
-- The row rules are those of models/staging/landing/base/base_landing__access_events.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
--
-- Loaded rows never change (a changed landing file rebuilds the working database), so each
-- row is checked once, by the first check after its load, and this file also writes what
-- it found into two tables of the working database: raw.access_events_check_counts keeps
-- the counts of every load's rows (per instance), raw.access_events_check_conflicts the
-- number of event ids each check found conflicting. A night parses only the rows it loaded
-- and the rows that share an event id with them (plus one pass over every row's event_id),
-- and the one row at the end is what checking every row gives (tests/test_incremental.py).
-- A count added here must add up across loads, and goes into the table, its insert and
-- the sums at the end.

-- The rows of a table (or CTE) shaped like raw.access_events, with the rules each breaks.
create or replace temp macro flagged_access_events(rows_name) as table
with

events as (
    select
        _load_id,
        present(event_id) as event_id,
        present(occurred_at) as occurred_at_text,
        try_cast(present(occurred_at) as timestamptz) as occurred_at,
        present(instance_id) as instance_id,
        present(user_id) as user_id,
        lower(present(action)) as action
    from query_table(rows_name)
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
)

select
    *,
    is_missing_event_id or is_missing_occurred_at or is_unparseable_occurred_at
    or is_missing_instance_id or is_missing_user_id or is_missing_action
    or is_unknown_action as is_quarantined
from flagged;

create table if not exists raw.access_events_check_counts (
    _load_id bigint,
    instance_id varchar,
    rows_loaded bigint,
    missing_event_id_rows bigint,
    missing_occurred_at_rows bigint,
    unparseable_occurred_at_rows bigint,
    missing_instance_id_rows bigint,
    missing_user_id_rows bigint,
    missing_action_rows bigint,
    unknown_action_rows bigint,
    failed_rule_rows bigint,
    -- rows breaking no rule: they also need an instance the instances files declare, which
    -- a later file can bring, so that rule is counted at the end, on every check
    usable_rows bigint
);

create table if not exists raw.access_events_check_conflicts (
    -- every row of the loads up to this one has been checked
    up_to_load_id bigint,
    -- event ids this check found conflicting that no earlier check had
    conflicting_event_ids bigint
);

set variable access_events_checked_up_to = (
    select coalesce(max(up_to_load_id), 0) from raw.access_events_check_conflicts
);

-- Both inserts or neither: a load's rule counts without its conflicting ids (or the other
-- way round) would be counted again, or never, by the next check.
begin transaction;

insert into raw.access_events_check_counts by name
with

new_rows as (
    select * from raw.access_events
    where _load_id > getvariable('access_events_checked_up_to')
)

select
    _load_id,
    instance_id,
    count(*) as rows_loaded,
    count(*) filter (where is_missing_event_id) as missing_event_id_rows,
    count(*) filter (where is_missing_occurred_at) as missing_occurred_at_rows,
    count(*) filter (where is_unparseable_occurred_at) as unparseable_occurred_at_rows,
    count(*) filter (where is_missing_instance_id) as missing_instance_id_rows,
    count(*) filter (where is_missing_user_id) as missing_user_id_rows,
    count(*) filter (where is_missing_action) as missing_action_rows,
    count(*) filter (where is_unknown_action) as unknown_action_rows,
    count(*) filter (where is_quarantined) as failed_rule_rows,
    count(*) filter (where not is_quarantined) as usable_rows
from flagged_access_events('new_rows')
group by _load_id, instance_id;

-- Rows sharing an event_id are one event; ids whose rows disagree are reported. An id is
-- counted by the check that first sees its rows disagree, and that check holds one of them.
insert into raw.access_events_check_conflicts by name
with

-- The ids to look at, by hash (cheap; equal hashes of different ids are told apart below):
-- those of the new rows or, on the first check, those read more than once. (Each branch
-- reads nothing unless it is the one that applies.) A missing id is never a candidate:
-- its rows are quarantined.
candidate_hashes as (
    select hash(present(event_id)) as event_hash
    from raw.access_events
    where
        _load_id > getvariable('access_events_checked_up_to')
        and getvariable('access_events_checked_up_to') > 0
        and present(event_id) is not null
    union
    select hash(present(event_id)) as event_hash
    from raw.access_events
    where getvariable('access_events_checked_up_to') = 0 and present(event_id) is not null
    group by event_hash
    having count(*) > 1
),

candidate_rows as (
    select * from raw.access_events
    where hash(present(event_id)) in (select candidate_hashes.event_hash from candidate_hashes)
),

-- The rules are applied in the aggregates, not in a filter here: DuckDB would move such a
-- filter below the lookup above and check every row of the table.
candidates as (
    select
        event_id,
        _load_id,
        is_quarantined,
        (occurred_at, instance_id, user_id, action) as event
    from flagged_access_events('candidate_rows')
),

newly_conflicting as (
    select event_id
    from candidates
    group by event_id
    having
        count(distinct event) filter (where not is_quarantined) > 1
        and count(distinct event) filter (
            where not is_quarantined
            and _load_id <= getvariable('access_events_checked_up_to')
        ) <= 1
)

select
    max(_load_id) as up_to_load_id,
    (select count(*) from newly_conflicting) as conflicting_event_ids
from raw.access_events
having max(_load_id) > getvariable('access_events_checked_up_to');

commit;

with

instances as (
    select distinct present(instance_id) as instance_id
    from raw.instances
    where present(instance_id) is not null and present(plan_id) is not null
),

rules as (
    select
        coalesce(sum(rows_loaded), 0)::bigint as rows_loaded,
        coalesce(sum(missing_event_id_rows), 0)::bigint as missing_event_id_rows,
        coalesce(sum(missing_occurred_at_rows), 0)::bigint as missing_occurred_at_rows,
        coalesce(sum(unparseable_occurred_at_rows), 0)::bigint as unparseable_occurred_at_rows,
        coalesce(sum(missing_instance_id_rows), 0)::bigint as missing_instance_id_rows,
        coalesce(sum(missing_user_id_rows), 0)::bigint as missing_user_id_rows,
        coalesce(sum(missing_action_rows), 0)::bigint as missing_action_rows,
        coalesce(sum(unknown_action_rows), 0)::bigint as unknown_action_rows,
        coalesce(sum(failed_rule_rows), 0)::bigint as failed_rule_rows,
        coalesce(sum(usable_rows) filter (where
            instance_id not in (select instances.instance_id from instances)
        ), 0)::bigint as unknown_instance_rows,
        (
            select coalesce(sum(conflicting_event_ids), 0)::bigint
            from raw.access_events_check_conflicts
        ) as conflicting_event_ids
    from raw.access_events_check_counts
)

select * from raw_check_table(
    'rules',
    'access_events',
    ['event_id', 'occurred_at', 'instance_id', 'user_id', 'action']
)
