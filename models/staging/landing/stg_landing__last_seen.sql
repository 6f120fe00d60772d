-- Activity observations the run can see (last_seen_at < A); the marts take the latest.
with

observations as (
    select * from {{ ref('base_landing__last_seen') }}
    where quarantine_reason is null
),

final as (
    select
        instance_id,
        user_id,
        last_seen_at
    from observations
    where last_seen_at < {{ as_of_instant() }}
)

select * from final
