{#- N for the inactive-user candidates: users inactive for N or more days (dbt var
    inactive_days; the run passes USERCOUNTS_INACTIVE_DAYS, default 90). -#}
{% macro inactive_days() -%}
    cast('{{ var("inactive_days") }}' as integer)
{%- endmacro %}
