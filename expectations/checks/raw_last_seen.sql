-- Check table of the suite raw_last_seen: one row of counts over raw.last_seen.
-- The row rules are those of models/staging/landing/base/base_landing__last_seen.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
with

observations as (
    select
        present(instance_id) as instance_id,
        present(user_id) as user_id,
        present(last_seen_at) as last_seen_at_text,
        try_cast(present(last_seen_at) as timestamptz) as last_seen_at
    from raw.last_seen
),

flagged as (
    select
        *,
        instance_id is null as is_missing_instance_id,
        user_id is null as is_missing_user_id,
        last_seen_at_text is null as is_missing_last_seen_at,
        last_seen_at_text is not null and last_seen_at is null as is_unparseable_last_seen_at
    from observations
),

rules as (
    select
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
)

select * from raw_check_table('rules', 'last_seen', ['instance_id', 'user_id', 'last_seen_at'])
