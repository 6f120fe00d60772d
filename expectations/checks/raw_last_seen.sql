-- Check table of the suite raw_last_seen: one row of counts over raw.last_seen.
-- The row rules are those of models/staging/landing/base/base_landing__last_seen.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
--
-- Every rule is about one row, and loaded rows never change, so each row is checked once:
-- this file also writes raw.last_seen_check_counts, the counts of every load's rows, and a
-- night reads only the rows it loaded (as checks/raw_access_events.sql does). A count added
-- here goes into the table, its insert and the sums at the end.

create table if not exists raw.last_seen_check_counts (
    _load_id bigint,
    rows_loaded bigint,
    missing_instance_id_rows bigint,
    missing_user_id_rows bigint,
    missing_last_seen_at_rows bigint,
    unparseable_last_seen_at_rows bigint,
    failed_rule_rows bigint
);

set variable last_seen_checked_up_to = (
    select coalesce(max(_load_id), 0) from raw.last_seen_check_counts
);

insert into raw.last_seen_check_counts by name
with

observations as (
    select
        _load_id,
        present(instance_id) as instance_id,
        present(user_id) as user_id,
        present(last_seen_at) as last_seen_at_text,
        try_cast(present(last_seen_at) as timestamptz) as last_seen_at
    from raw.last_seen
    where _load_id > getvariable('last_seen_checked_up_to')
),

flagged as (
    select
        *,
        instance_id is null as is_missing_instance_id,
        user_id is null as is_missing_user_id,
        last_seen_at_text is null as is_missing_last_seen_at,
        last_seen_at_text is not null and last_seen_at is null as is_unparseable_last_seen_at
    from observations
)

select
    _load_id,
    count(*) as rows_loaded,
    count(*) filter (where is_missing_instance_id) as missing_instance_id_rows,
    count(*) filter (where is_missing_user_id) as missing_user_id_rows,
    count(*) filter (where is_missing_last_seen_at) as missing_last_seen_at_rows,
    count(*) filter (where is_unparseable_last_seen_at) as unparseable_last_seen_at_rows,
    count(*) filter (where
        is_missing_instance_id or is_missing_user_id or is_missing_last_seen_at
        or is_unparseable_last_seen_at
    ) as failed_rule_rows
from flagged
group by _load_id;

with

rules as (
    select
        coalesce(sum(rows_loaded), 0)::bigint as rows_loaded,
        coalesce(sum(missing_instance_id_rows), 0)::bigint as missing_instance_id_rows,
        coalesce(sum(missing_user_id_rows), 0)::bigint as missing_user_id_rows,
        coalesce(sum(missing_last_seen_at_rows), 0)::bigint as missing_last_seen_at_rows,
        coalesce(sum(unparseable_last_seen_at_rows), 0)::bigint
            as unparseable_last_seen_at_rows,
        coalesce(sum(failed_rule_rows), 0)::bigint as failed_rule_rows
    from raw.last_seen_check_counts
)

select * from raw_check_table('rules', 'last_seen', ['instance_id', 'user_id', 'last_seen_at'])
