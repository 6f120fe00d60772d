-- Shared pieces of the raw check tables, as DuckDB temporary macros. The quality step runs
-- this file on its connection before the checks/*.sql of a layer.

-- One row about the files of one landing source: how many were read, could not be read at
-- all, had no rows, or lacked a required / an optional contract column (raw.missing_columns,
-- written by the load step), which files those are, and how many rows the CSV reader rejected.
create or replace temp macro landing_files(source_name, required_columns) as table
with

files as (
    select * from raw.loaded_files
    where source = source_name
),

unreadable as (
    select distinct file_name from raw.load_rejects
    where source = source_name and row_number is null
),

missing as (
    select
        file_name,
        bool_or(list_contains(required_columns, column_name)) as lacks_required,
        bool_or(not list_contains(required_columns, column_name)) as lacks_optional
    from raw.missing_columns
    where source = source_name
    group by file_name
),

classified as (
    select
        files.file_name,
        unreadable.file_name is not null as is_unreadable,
        unreadable.file_name is null and files.rows_loaded = 0 and files.rows_rejected = 0
            as is_empty,
        coalesce(missing.lacks_required, false) as lacks_required,
        coalesce(missing.lacks_optional, false) as lacks_optional
    from files
    left join unreadable on files.file_name = unreadable.file_name
    left join missing on files.file_name = missing.file_name
),

final as (
    select
        count(*) as files,
        count(*) filter (where is_unreadable) as unreadable_files,
        count(*) filter (where is_empty) as empty_files,
        count(*) filter (where lacks_required and not is_unreadable and not is_empty)
            as files_missing_required_columns,
        count(*) filter (where lacks_optional and not is_unreadable and not is_empty)
            as files_missing_optional_columns,
        (select count(*) from raw.load_rejects where source = source_name) as rejected_rows,
        -- the files each count is about, named in the run's message (<count>_names)
        string_agg(file_name, ', ' order by file_name) filter (where is_unreadable)
            as unreadable_files_names,
        string_agg(file_name, ', ' order by file_name) filter (where is_empty)
            as empty_files_names,
        string_agg(file_name, ', ' order by file_name)
            filter (where lacks_required and not is_unreadable and not is_empty)
            as files_missing_required_columns_names,
        string_agg(file_name, ', ' order by file_name)
            filter (where lacks_optional and not is_unreadable and not is_empty)
            as files_missing_optional_columns_names
    from classified
)

select * from final;

-- A text value as the base models read it: trimmed, and blank means missing.
create or replace temp macro present(value) as nullif(trim(value), '');

-- A raw suite's check table: its rule counts (the CTE named rules_name, with rows_loaded
-- and failed_rule_rows) beside its files' counts, and the share of its rows that are
-- quarantined: rows breaking a rule plus rows the reader rejected (0 when it has no rows:
-- the suites check that separately).
create or replace temp macro raw_check_table(rules_name, source_name, required_columns) as table
select
    files.*,
    rules.*,
    rules.failed_rule_rows + files.rejected_rows as quarantined_rows,
    coalesce(
        (rules.failed_rule_rows + files.rejected_rows)
        / nullif(rules.rows_loaded + files.rejected_rows, 0),
        0
    ) as quarantined_share
from query_table(rules_name) as rules
cross join landing_files(source_name, required_columns) as files;

-- Every raw.plans row as base_landing__plans.sql reads it, with a flag per row rule and
-- whether the row is quarantined: raw_plans counts the rules; raw_instances knows a plan
-- by its usable rows only, as the models do.
create or replace temp macro checked_plan_rows() as table
with

plans as (
    select
        present(plan_id) as plan_id,
        present(org_id) as org_id,
        lower(present(plan_type)) as plan_type,
        lower(present(billing_cycle)) as billing_cycle,
        present(user_tier) as user_tier_text,
        case
            when regexp_full_match(present(user_tier), '\s*[+-]?[0-9]+([.]0*)?\s*')
                then try_cast(present(user_tier) as bigint)
        end as user_tier,
        present(renewal_date) as renewal_date_text,
        try_cast(present(renewal_date) as date) as renewal_date,
        present(updated_at) as updated_at_text,
        try_cast(present(updated_at) as timestamptz) as updated_at
    from raw.plans
),

flagged as (
    select
        *,
        plan_id is null as is_missing_plan_id,
        org_id is null as is_missing_org_id,
        plan_type is null as is_missing_plan_type,
        coalesce(plan_type not in ('product', 'marketplace_app', 'guard_standard'), false)
            as is_unknown_plan_type,
        billing_cycle is null as is_missing_billing_cycle,
        coalesce(billing_cycle not in ('annual', 'monthly'), false) as is_unknown_billing_cycle,
        user_tier_text is null as is_missing_user_tier,
        user_tier_text is not null and user_tier is null as is_unparseable_user_tier,
        coalesce(user_tier <= 0, false) as is_non_positive_user_tier,
        renewal_date_text is not null and renewal_date is null as is_unparseable_renewal_date,
        updated_at_text is null as is_missing_updated_at,
        updated_at_text is not null and updated_at is null as is_unparseable_updated_at
    from plans
),

checked as (
    select
        *,
        is_missing_plan_id or is_missing_org_id or is_missing_plan_type or is_unknown_plan_type
        or is_missing_billing_cycle or is_unknown_billing_cycle or is_missing_user_tier
        or is_unparseable_user_tier or is_non_positive_user_tier
        or is_unparseable_renewal_date or is_missing_updated_at
        or is_unparseable_updated_at as is_quarantined
    from flagged
)

select * from checked;
