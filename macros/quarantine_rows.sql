{#- The quarantined rows of one landing source: rows whose values failed a check (from its
    base model) and rows the reader could not split or files it could not read.
    bookkeeping: base-model columns that are not part of the row (left out). -#}
{% macro quarantine_rows(source_name, bookkeeping=['load_id']) %}
with

failed_checks as (
    select * from {{ ref('base_landing__' ~ source_name) }}
    where quarantine_reason is not null
),

unreadable as (
    select * from {{ source('raw', 'load_rejects') }}
    where source = '{{ source_name }}'
),

final as (
    select
        file_name,
        row_number,
        quarantine_reason as reason,
        columns(* exclude (
            file_name, row_number, quarantine_reason, {{ bookkeeping | join(', ') }}
        ))
    from failed_checks

    union all by name

    select
        file_name,
        row_number,
        reason,
        raw_line
    from unreadable
)

select * from final
order by file_name, row_number
{% endmacro %}
