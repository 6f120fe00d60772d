-- One row per instance: when files disagree, the latest file wins.
with

instances as (
    select * from {{ ref('base_landing__instances') }}
    where quarantine_reason is null
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by instance_id order by file_name desc, row_number desc
        ) as recency
    from instances
),

final as (
    select
        instance_id,
        plan_id,
        coalesce(nullif(instance_name, ''), instance_id) as instance_name,
        site_url
    from deduplicated
    where recency = 1
)

select * from final
