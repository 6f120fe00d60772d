-- The users whose rows in user_last_seen and counted_users an incremental build computes
-- again: the users of the pairs whose events changed (int_access_pairs_changed, which also
-- lists every pair on an instance named by a newly loaded instances row) and the users
-- named by a newly loaded users row (email, name, billable). A new last-seen observation
-- alone does not: those marts raise last_seen_at in place (macros/incremental.sql).
-- Empty (and unused) on a full build.
{%- set previous = previous_build() %}
with

pairs as (
    select * from {{ ref('int_access_pairs_changed') }}
),

users as (
    select * from {{ ref('base_landing__users') }}
),

final as (
    select user_id from pairs

    union

    select user_id from users
    where
        quarantine_reason is null
        and {{ 'false' if previous is none else 'load_id > ' ~ previous.load_id }}
)

select * from final
