{#- No two rows share the values of these columns (a compound primary key).
    recomputed_users: for a model that an incremental build recomputes user by user (it
    deletes and inserts every row of each user in int_access_pairs_changed), check only
    those users' rows on an incremental build: every key holds the user, and the other
    rows were checked when they were written. A build from scratch checks every row. -#}
{% test unique_combination_of_columns(model, combination_of_columns, recomputed_users=false) %}
{%- set changed = ref('int_access_pairs_changed') if recomputed_users else none %}
select
    {{ combination_of_columns | join(', ') }},
    count(*) as rows_with_key
from {{ model }}
{%- if changed is not none and previous_build() is not none %}
where user_id in (select user_id from {{ changed }})
{%- endif %}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}
