{#- N for the inactive-user candidates: users inactive for N or more days. The run passes
    USERCOUNTS_INACTIVE_DAYS in the environment (default 90), like the as-of date, so that
    a changed N does not make dbt re-parse the project; a `--vars '{inactive_days: N}'` or a
    unit-test override takes precedence. -#}
{% macro inactive_days() -%}
    {%- set value = var('inactive_days', none) -%}
    {%- if value is none -%}
        {%- set value = env_var('USERCOUNTS_INACTIVE_DAYS', '90') if execute else '90' -%}
    {%- endif -%}
    {%- if not modules.re.fullmatch('[0-9]+', value | string) -%}
        {{ exceptions.raise_compiler_error('inactive days is not a whole number: ' ~ value) }}
    {%- endif -%}
    cast({{ value }} as integer)
{%- endmacro %}
