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
