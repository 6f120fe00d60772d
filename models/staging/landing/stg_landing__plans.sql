-- One row per plan version. Two rows for the same (plan_id, updated_at): the later file wins.
with

plans as (
    select * from {{ ref('base_landing__plans') }}
    where quarantine_reason is null
),

deduplicated as (
    select
        *,
        row_number() over (
            partition by plan_id, updated_at order by file_name desc, row_number desc
        ) as recency
    from plans
),

final as (
    select
        plan_id,
        org_id,
        coalesce(nullif(plan_name, ''), plan_id) as plan_name,
        product_key,
        plan_type,
        billing_cycle,
        user_tier,
        renewal_date,
        updated_at
    from deduplicated
    where recency = 1
)

select * from final
