-- Each plan version with the span in which it is in force: the version in force at instant t
-- is the one with the latest updated_at <= t, and before the first version, the first one.
-- In force at t means valid_from <= t < valid_to.
with

plans as (
    select * from {{ ref('stg_landing__plans') }}
),

versioned as (
    select
        *,
        row_number() over (partition by plan_id order by updated_at) as version_number,
        lead(updated_at) over (partition by plan_id order by updated_at) as next_updated_at
    from plans
),

final as (
    select
        plan_id,
        org_id,
        plan_name,
        product_key,
        plan_type,
        billing_cycle,
        version_number,
        user_tier,
        renewal_date,
        updated_at,
        case
            when version_number = 1 then cast('-infinity' as timestamp) else updated_at
        end as valid_from,
        coalesce(next_updated_at, cast('infinity' as timestamp)) as valid_to
    from versioned
)

select * from final
