{{ config(
    materialized='incremental',
    unique_key='user_id',
    incremental_strategy='delete+insert',
) }}
-- One row per user: the latest file wins per user_id (data-contract section 1). A table kept
-- incrementally: users in the rows loaded since the last build are replaced by their latest
-- row among those (a newly loaded file sorts after every file loaded before, or the run
-- rebuilds from scratch).
with

base_users as (
    select * from {{ ref('base_landing__users') }}
    {% if is_incremental() -%}
        where load_id > {{ previous_load_id() }}
    {%- endif %}
),

users as (
    select * from base_users
    where quarantine_reason is null
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by user_id order by file_name desc, row_number desc
        ) as recency
    from users
),

final as (
    select
        user_id,
        email,
        display_name,
        account_type,
        coalesce(is_billable, true) as is_billable
    from deduplicated
    where recency = 1
)

select * from final
