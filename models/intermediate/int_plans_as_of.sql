-- One row per plan: the version in force at the as-of instant A.
with

versions as (
    select * from {{ ref('int_plan_versions') }}
),

final as (
    select *
    from versions
    where valid_from <= {{ as_of_instant() }} and {{ as_of_instant() }} < valid_to
)

select * from final
