-- One row per plan and instance: the instances each plan covers at the as-of instant A, with
-- the product's display name (seed product_catalogue; an unknown key shows as itself). The
-- users export has one `Last seen in <product_name> - <instance_name>` column per row.
with

instances as (
    select * from {{ ref('stg_landing__instances') }}
),

plans as (
    select * from {{ ref('int_plans_as_of') }}
),

products as (
    select * from {{ ref('product_catalogue') }}
),

final as (
    select
        plans.org_id,
        instances.plan_id,
        instances.instance_id,
        instances.instance_name,
        instances.site_url,
        plans.product_key,
        coalesce(products.product_name, plans.product_key, 'unknown product') as product_name
    from instances
    inner join plans on instances.plan_id = plans.plan_id
    left join products on plans.product_key = products.product_key
)

select * from final
