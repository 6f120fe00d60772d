-- Check table of the suite raw_instances: one row of counts over raw.instances.
-- The row rules are those of models/staging/landing/base/base_landing__instances.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
with

instances as (
    select
        present(instance_id) as instance_id,
        present(plan_id) as plan_id
    from raw.instances
),

-- A plan whose rows are all quarantined is not counted, so it is no plan here either (as
-- raw_access_events knows an instance by its usable rows only).
plans as (
    select distinct plan_id
    from checked_plan_rows()
    where not is_quarantined
),

flagged as (
    select
        *,
        instance_id is null as is_missing_instance_id,
        plan_id is null as is_missing_plan_id
    from instances
),

-- An instance is covered by exactly one plan; ids that name several are reported.
conflicting_ids as (
    select instance_id
    from flagged
    where not is_missing_instance_id and not is_missing_plan_id
    group by instance_id
    having count(distinct plan_id) > 1
),

rules as (
    select
        count(*) as rows_loaded,
        count(*) filter (where is_missing_instance_id) as missing_instance_id_rows,
        count(*) filter (where is_missing_plan_id) as missing_plan_id_rows,
        count(*) filter (where is_missing_instance_id or is_missing_plan_id) as failed_rule_rows,
        count(*) filter (where
            not is_missing_plan_id and plan_id not in (select plan_id from plans)
        ) as unknown_plan_rows,
        (select count(*) from conflicting_ids) as conflicting_instance_ids
    from flagged
)

select * from raw_check_table('rules', 'instances', ['instance_id', 'plan_id'])
