{#- The as-of date D and instant A = D + 1 day 00:00 UTC (data-contract section 2). -#}
{% macro as_of_date() -%}
    cast('{{ var("as_of_date") }}' as date)
{%- endmacro %}

{% macro as_of_instant() -%}
    cast(cast('{{ var("as_of_date") }}' as date) + interval 1 day as timestamp)
{%- endmacro %}
