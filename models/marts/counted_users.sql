{{ config(
    materialized='incremental',
    unique_key=['plan_id', 'user_id'],
    incremental_strategy='append',
    pre_hook="{{ delete_user_rows_to_recompute(admins=true) }}",
    post_hook=[
        "{{ raise_plan_last_seen() }}",
        "{{ raise_inactive_since() }}",
        "{{ update_days_to_as_of({
            'days_since_last_seen': 'last_seen_at', 'days_inactive': 'inactive_since'
        }) }}",
    ],
) }}
-- depends_on: {{ ref('int_users_changed') }}
-- depends_on: {{ ref('base_landing__plans') }}
-- depends_on: {{ ref('int_plan_versions') }}
-- depends_on: {{ ref('base_landing__org_admins') }}
-- depends_on: {{ ref('base_landing__last_seen') }}
-- One row per plan and user counted there at the as-of instant A (access to at least one of
-- the plan's instances), with what an admin needs to decide whom to remove: when the user was
-- last seen on any of the plan's instances, since when they have access, and the org-level
-- facts the users export shows (added to org, org admin).
-- Incremental: the rows of the users in int_users_changed are computed again (all rows when
-- a plan or the org admins changed, macros/incremental.sql); a later last-seen, the
-- inactive-since it raises and the day counts are updated in place by the post-hooks.
with

user_access as (
    select * from {{ ref('user_last_seen') }}
    {%- if is_incremental() %}
        where {{ is_user_to_recompute('user_id') }}
    {%- endif %}
),

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

admins as (
    select * from {{ ref('stg_landing__org_admins') }}
),

observations as (
    select * from {{ ref('stg_landing__last_seen') }}
    {%- if is_incremental() %}
        where {{ is_user_to_recompute('user_id') }}
    {%- endif %}
),

access_per_plan as (
    select
        org_id,
        plan_id,
        user_id,
        count(*) as instances_with_access,
        bool_and(access_status = 'invited') as is_invited_only,
        min(access_since) as earliest_instance_access_since,
        max(last_seen_at) as last_seen_at
    from user_access
    group by org_id, plan_id, user_id
),

-- The user's spans on the plan's instances, for the access to the plan as a whole: a user
-- moved from one instance of the plan to another has had access to the plan throughout.
plan_spans as (
    select
        instances.plan_id,
        spans.user_id,
        spans.instance_id,
        spans.valid_from,
        spans.valid_to
    from spans
    inner join instances on spans.instance_id = instances.instance_id
),

-- Only a user with spans on more than one of the plan's instances can have had access to the
-- plan from before their instances' own access_since, or been seen last on an instance left
-- since; on one instance the two are the same (1M users: 13% of the pairs; the rest skip
-- the sort below).
multi_instance_pairs as (
    select
        plan_id,
        user_id
    from plan_spans
    group by plan_id, user_id
    having count(distinct instance_id) > 1
),

multi_instance_spans as (
    select plan_spans.*
    from plan_spans
    inner join multi_instance_pairs
        on plan_spans.plan_id = multi_instance_pairs.plan_id
            and plan_spans.user_id = multi_instance_pairs.user_id
),

-- A span starts a new run of access to the plan when it begins after every earlier span of
-- the plan has ended. A span holds for valid_from < t <= valid_to, so one that begins as
-- another ends continues the run (no instant without access, as on one instance).
plan_span_starts as (
    select
        plan_id,
        user_id,
        valid_from,
        max(coalesce(valid_to, cast('infinity' as timestamp))) over (
            partition by plan_id, user_id
            order by valid_from
            rows between unbounded preceding and 1 preceding
        ) as covered_until
    from multi_instance_spans
),

-- the start of the run of access to the plan that holds at A (the latest run)
plan_access_since as (
    select
        plan_id,
        user_id,
        max(valid_from) filter (
            where covered_until is null or valid_from > covered_until
        ) as access_since
    from plan_span_starts
    group by plan_id, user_id
),

accessed_instances as (
    select distinct
        plan_id,
        user_id,
        instance_id
    from multi_instance_spans
),

-- The latest sighting on an instance of the plan the user has had access to, one they have
-- left since included: a user moved to another instance was still seen on the plan.
plan_sightings as (
    select
        accessed.plan_id,
        accessed.user_id,
        max(observations.last_seen_at) as seen_at
    from accessed_instances as accessed
    inner join observations
        on accessed.instance_id = observations.instance_id
            and accessed.user_id = observations.user_id
    group by accessed.plan_id, accessed.user_id
),

-- the first instant the user had access (invited or active) to any instance of the org
added_to_org as (
    select
        plans.org_id,
        plan_spans.user_id,
        min(plan_spans.valid_from) as added_to_org_at
    from plan_spans
    inner join plans on plan_spans.plan_id = plans.plan_id
    group by plans.org_id, plan_spans.user_id
),

admin_emails as (
    select distinct
        org_id,
        lower(email) as email_key
    from admins
),

-- access to the plan began where its runs say so; for a user on one of its instances, at
-- that instance's own access_since, and that instance's sightings are the plan's
with_access_since as (
    select
        access_per_plan.*,
        plan_sightings.seen_at as latest_sighting_on_any_instance,
        coalesce(plan_access_since.access_since, access_per_plan.earliest_instance_access_since)
            as access_since
    from access_per_plan
    left join plan_access_since
        on access_per_plan.plan_id = plan_access_since.plan_id
            and access_per_plan.user_id = plan_access_since.user_id
    left join plan_sightings
        on access_per_plan.plan_id = plan_sightings.plan_id
            and access_per_plan.user_id = plan_sightings.user_id
),

-- inactive since the last sighting on the plan, or since access to it began when that is
-- later (never seen, or seen only before the current access began)
with_inactive_since as (
    select
        *,
        greatest(last_seen_at, latest_sighting_on_any_instance, access_since) as inactive_since
    from with_access_since
),

final as (
    select
        with_inactive_since.org_id,
        with_inactive_since.plan_id,
        with_inactive_since.user_id,
        users.email,
        users.display_name,
        case when with_inactive_since.is_invited_only then 'invited' else 'active' end
            as access_status,
        with_inactive_since.instances_with_access,
        {{ as_of_date() }} - cast(with_inactive_since.last_seen_at as date)
            as days_since_last_seen,
        {{ as_of_date() }} - cast(with_inactive_since.inactive_since as date) as days_inactive,
        coalesce(users.is_billable, true) as is_billable,
        admin_emails.email_key is not null as is_org_admin,
        added_to_org.added_to_org_at,
        with_inactive_since.access_since,
        with_inactive_since.last_seen_at,
        with_inactive_since.inactive_since
    from with_inactive_since
    left join users on with_inactive_since.user_id = users.user_id
    left join admin_emails
        on with_inactive_since.org_id = admin_emails.org_id
            and lower(users.email) = admin_emails.email_key
    left join added_to_org
        on with_inactive_since.org_id = added_to_org.org_id
            and with_inactive_since.user_id = added_to_org.user_id
)

select * from final
