{#- The as-of date D and instant A = D + 1 day 00:00 UTC (data-contract section 2).

    The run passes D in the environment (USERCOUNTS_AS_OF_DATE), read only while models run:
    dbt re-parses the whole project whenever `--vars` change, which would cost seconds every
    night. `--vars '{as_of_date: YYYY-MM-DD}'` and unit-test overrides still take precedence. -#}
{% macro as_of_date_text() -%}
    {%- set value = var('as_of_date', none) -%}
    {%- if value is none -%}
        {%- set value = env_var('USERCOUNTS_AS_OF_DATE', '2099-12-31') if execute else '2099-12-31' -%}
    {%- endif -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value | string) -%}
        {{ exceptions.raise_compiler_error('as-of date is not YYYY-MM-DD: ' ~ value) }}
    {%- endif -%}
    {{- return(value | string) -}}
{%- endmacro %}

{% macro as_of_date() -%}
    cast('{{ as_of_date_text() }}' as date)
{%- endmacro %}

{% macro as_of_instant() -%}
    cast(cast('{{ as_of_date_text() }}' as date) + interval 1 day as timestamp)
{%- endmacro %}
