{#- Rows for which the expression is false fail the test (as dbt_utils' test of that name;
    dbt packages cannot be fetched here, so the project keeps its own). -#}
{% test expression_is_true(model, expression, column_name=none, where=none) %}
select *
from {{ model }}
where not ({{ expression }})
{%- if where %} and ({{ where }}){% endif %}
{% endtest %}
