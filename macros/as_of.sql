{#- The as-of date D and instant A = D + 1 day 00:00 UTC (data-contract section 2).

    The run passes D in the environment (USERCOUNTS_AS_OF_DATE), read only while models run:
    dbt re-parses the whole project whenever `--vars` change, which would cost seconds every
    night. `--vars '{as_of_date: YYYY-MM-DD}'` and unit-test overrides still take precedence. -#}
{% macro as_of_date_text() -%}
    {{- return(run_value(
        'as_of_date', 'USERCOUNTS_AS_OF_DATE', '2099-12-31',
        '[0-9]{4}-[0-9]{2}-[0-9]{2}', 'as-of date is not YYYY-MM-DD'
    )) -}}
{%- endmacro %}

{% macro as_of_date() -%}
    cast('{{ as_of_date_text() }}' as date)
{%- endmacro %}

{% macro as_of_instant() -%}
    cast(cast('{{ as_of_date_text() }}' as date) + interval 1 day as timestamp)
{%- endmacro %}
