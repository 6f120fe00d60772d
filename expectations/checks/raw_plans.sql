-- Check table of the suite raw_plans: one row of counts over raw.plans.
-- The row rules are those of models/staging/landing/base/base_landing__plans.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
with

plans as (
    select
        present(plan_id) as plan_id,
        present(org_id) as org_id,
        lower(present(plan_type)) as plan_type,
        lower(present(billing_cycle)) as billing_cycle,
        present(user_tier) as user_tier_text,
        case
            when regexp_full_match(present(user_tier), '\s*[+-]?[0-9]+([.]0*)?\s*')
                then try_cast(present(user_tier) as bigint)
        end as user_tier,
        present(renewal_date) as renewal_date_text,
        try_cast(present(renewal_date) as date) as renewal_date,
        present(updated_at) as updated_at_text,
        try_cast(present(updated_at) as timestamptz) as updated_at
    from raw.plans
),

flagged as (
    select
        *,
        plan_id is null as is_missing_plan_id,
        org_id is null as is_missing_org_id,
        plan_type is null as is_missing_plan_type,
        coalesce(plan_type not in ('product', 'marketplace_app', 'guard_standard'), false)
            as is_unknown_plan_type,
        billing_cycle is null as is_missing_billing_cycle,
        coalesce(billing_cycle not in ('annual', 'monthly'), false) as is_unknown_billing_cycle,
        user_tier_text is null as is_missing_user_tier,
        user_tier_text is not null and user_tier is null as is_unparseable_user_tier,
        coalesce(user_tier <= 0, false) as is_non_positive_user_tier,
        renewal_date_text is not null and renewal_date is null as is_unparseable_renewal_date,
        updated_at_text is null as is_missing_updated_at,
        updated_at_text is not null and updated_at is null as is_unparseable_updated_at
    from plans
),

checked as (
    select
        *,
        is_missing_plan_id or is_missing_org_id or is_missing_plan_type or is_unknown_plan_type
        or is_missing_billing_cycle or is_unknown_billing_cycle or is_missing_user_tier
        or is_unparseable_user_tier or is_non_positive_user_tier
        or is_unparseable_renewal_date or is_missing_updated_at
        or is_unparseable_updated_at as is_quarantined
    from flagged
),

-- Two rows for the same plan version (plan_id, updated_at) that disagree: the later file
-- wins, and the versions are reported.
conflicting_versions as (
    select plan_id, updated_at
    from checked
    where not is_quarantined
    group by plan_id, updated_at
    having count(distinct (org_id, plan_type, billing_cycle, user_tier, renewal_date)) > 1
),

rules as (
    select
        count(*) as rows_loaded,
        count(*) filter (where is_missing_plan_id) as missing_plan_id_rows,
        count(*) filter (where is_missing_org_id) as missing_org_id_rows,
        count(*) filter (where is_missing_plan_type) as missing_plan_type_rows,
        count(*) filter (where is_unknown_plan_type) as unknown_plan_type_rows,
        count(*) filter (where is_missing_billing_cycle) as missing_billing_cycle_rows,
        count(*) filter (where is_unknown_billing_cycle) as unknown_billing_cycle_rows,
        count(*) filter (where is_missing_user_tier) as missing_user_tier_rows,
        count(*) filter (where is_unparseable_user_tier) as unparseable_user_tier_rows,
        count(*) filter (where is_non_positive_user_tier) as non_positive_user_tier_rows,
        count(*) filter (where is_unparseable_renewal_date) as unparseable_renewal_date_rows,
        count(*) filter (where is_missing_updated_at) as missing_updated_at_rows,
        count(*) filter (where is_unparseable_updated_at) as unparseable_updated_at_rows,
        count(*) filter (where is_quarantined) as failed_rule_rows,
        (select count(*) from conflicting_versions) as conflicting_plan_versions
    from checked
)

select * from raw_check_table(
    'rules',
    'plans',
    ['plan_id', 'org_id', 'plan_type', 'billing_cycle', 'user_tier', 'updated_at']
)
