{{ config(
    materialized='incremental',
    unique_key=['plan_id', 'instance_id', 'user_id'],
    incremental_strategy='append',
    pre_hook="{{ delete_user_rows_to_recompute() }}",
    post_hook=[
        "{{ raise_last_seen() }}",
        "{{ update_days_to_as_of({'days_since_last_seen': 'last_seen_at'}) }}",
    ],
) }}
-- depends_on: {{ ref('int_users_changed') }}
-- depends_on: {{ ref('base_landing__plans') }}
-- depends_on: {{ ref('int_plan_versions') }}
-- depends_on: {{ ref('base_landing__last_seen') }}
-- One row per plan, instance and user with access at the as-of instant A, with where the
-- user was last seen on that instance (null: never seen before A).
-- Incremental: the rows of the users in int_users_changed are computed again (all rows when
-- a plan changed, macros/incremental.sql); newer last-seen observations and the day counts
-- are updated in place by the post-hooks.
with

spans as (
    select * from {{ ref('int_access_state_intervals') }}
    {%- if is_incremental() %}
        where {{ is_user_to_recompute('user_id') }}
    {%- endif %}
),

instances as (
    select * from {{ ref('stg_landing__instances') }}
),

plans as (
    select * from {{ ref('int_plans_as_of') }}
),

users as (
    select * from {{ ref('stg_landing__users') }}
),

observations as (
    select * from {{ ref('stg_landing__last_seen') }}
    {%- if is_incremental() %}
        where {{ is_user_to_recompute('user_id') }}
    {%- endif %}
),

latest_observations as (
    select
        instance_id,
        user_id,
        max(last_seen_at) as last_seen_at
    from observations
    group by instance_id, user_id
),

-- events are already cut at A, so the spans that have not ended are the access at A
access_at_as_of as (
    select * from spans
    where valid_to is null
),

final as (
    select
        plans.org_id,
        instances.plan_id,
        access_at_as_of.instance_id,
        access_at_as_of.user_id,
        users.email,
        users.display_name,
        access_at_as_of.state as access_status,
        access_at_as_of.access_since,
        latest_observations.last_seen_at,
        {{ as_of_date() }} - cast(latest_observations.last_seen_at as date)
            as days_since_last_seen
    from access_at_as_of
    inner join instances on access_at_as_of.instance_id = instances.instance_id
    inner join plans on instances.plan_id = plans.plan_id
    left join users on access_at_as_of.user_id = users.user_id
    left join latest_observations
        on access_at_as_of.instance_id = latest_observations.instance_id
            and access_at_as_of.user_id = latest_observations.user_id
)

select * from final
