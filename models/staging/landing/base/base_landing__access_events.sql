{{ config(
    materialized='incremental',
    unique_key=['file_name', 'row_number'],
    incremental_strategy='delete+insert',
) }}
-- Every access_events row as read, typed, with the reason it is quarantined (null: usable)
-- and whether it is the first read of its event_id among usable rows (the copy that counts).
-- occurred_at_text, the value as read, is kept on quarantined rows only.
-- A table kept incrementally: each build parses only the rows loaded since the last one.
-- Earlier rows never change, because the run rebuilds from scratch whenever a new file could
-- hold a copy that is read before one already loaded (docs/operations.md).
with

source as (
    select * from {{ source('raw', 'access_events') }}
    {% if is_incremental() -%}
        where _load_id > {{ previous_load_id() }}
    {%- endif %}
),

parsed as (
    select
        trim(event_id) as event_id,
        trim(instance_id) as instance_id,
        trim(user_id) as user_id,
        lower(trim(action)) as action,
        {{ parse_timestamp('occurred_at') }} as occurred_at,
        occurred_at as occurred_at_text,
        _file_name as file_name,
        _row_number as row_number,
        _load_id as load_id
    from source
),

-- Materialized: read twice below, and the checks parse every row (the costly part).
checked as materialized (
    select
        *,
        {{ first_failed_check([
            (is_blank('event_id'), "'missing event_id'"),
            (is_blank('occurred_at_text'), "'missing occurred_at'"),
            ("occurred_at is null", "'unparseable occurred_at: ' || occurred_at_text"),
            (is_blank('instance_id'), "'missing instance_id'"),
            (is_blank('user_id'), "'missing user_id'"),
            (is_blank('action'), "'missing action'"),
            ("action not in ('invite', 'grant', 'revoke')", "'unknown action: ' || action"),
        ]) }} as quarantine_reason
    from parsed
),

usable as (
    select
        event_id,
        file_name,
        row_number,
        hash(event_id) as event_hash
    from checked
    where quarantine_reason is null
),

repeated as (
    -- event_ids read more than once, found by hash (cheap); equal hashes of different ids
    -- are told apart below, where the first read is chosen by the id itself
    select event_hash from usable
    group by event_hash
    having count(*) > 1
),

first_reads as (
    -- rows sharing an event_id are one event: the first read (file, then row) counts
    select
        event_id,
        min((file_name, row_number)) as first_read
    from usable
    where event_hash in (select repeated.event_hash from repeated)
    group by event_id
),

read_before as (
    -- event_ids whose first read is already in the table: the new copies do not count
    {% if is_incremental() -%}
        select event_id from {{ this }}
        where is_first_read and event_id in (select usable.event_id from usable)
    {%- else -%}
        select event_id from usable
        where false
    {%- endif %}
),

final as (
    select
        -- the text as read is kept where it explains a quarantine; on a usable row it only
        -- repeats occurred_at, and writing it cost ~0.5 s per 4M rows
        checked.* replace (
            case when checked.quarantine_reason is not null then checked.occurred_at_text end
                as occurred_at_text
        ),
        checked.quarantine_reason is null
        and (
            first_reads.first_read is null
            or (checked.file_name, checked.row_number) = first_reads.first_read
        )
        and checked.event_id not in (select read_before.event_id from read_before)
            as is_first_read
    from checked
    left join first_reads on checked.event_id = first_reads.event_id
)

select * from final
