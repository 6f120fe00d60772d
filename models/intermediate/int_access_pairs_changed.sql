-- The (instance, user) pairs whose events before A changed since the last build, with the
-- earliest instant from which their access may differ (changed_from): events loaded since
-- (before A), events the previous as-of instant hid and this one shows, and every pair on
-- an instance named by a newly loaded instances row (its plan may have changed: changed
-- from the beginning). Incremental models recompute these pairs and their users, and the
-- daily counts from the day of the earliest change. Empty (and unused) on a full build.
{%- set previous = previous_build() %}
with

events as (
    select * from {{ ref('base_landing__access_events') }}
    where is_first_read and occurred_at < {{ as_of_instant() }}
),

instances as (
    select * from {{ ref('base_landing__instances') }}
),

new_events as (
    select
        instance_id,
        user_id,
        occurred_at as changed_from
    from events
    {%- if previous is none %}
        where false
    {%- else %}
        where
            load_id > {{ previous.load_id }}
            or occurred_at >= {{ previous_as_of_instant(previous) }}
    {%- endif %}
),

remapped as (
    select
        events.instance_id,
        events.user_id,
        cast('-infinity' as timestamp) as changed_from
    from events
    inner join instances on events.instance_id = instances.instance_id
    where {{ 'false' if previous is none else 'instances.load_id > ' ~ previous.load_id }}
),

final as (
    select
        instance_id,
        user_id,
        min(changed_from) as changed_from
    from (
        select * from new_events
        union all
        select * from remapped
    ) as changes
    group by instance_id, user_id
)

select * from final
