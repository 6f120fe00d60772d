{#- N for the inactive-user candidates: users inactive for N or more days. The run passes
    USERCOUNTS_INACTIVE_DAYS in the environment (default 90), like the as-of date, so that
    a changed N does not make dbt re-parse the project; a `--vars '{inactive_days: N}'` or a
    unit-test override takes precedence. -#}
{% macro inactive_days() -%}
    {%- set value = run_value(
        'inactive_days', 'USERCOUNTS_INACTIVE_DAYS', '90',
        '[0-9]+', 'inactive days is not a whole number'
    ) -%}
    cast({{ value }} as integer)
{%- endmacro %}
