-- Check table of the suite raw_plans: one row of counts over raw.plans.
-- The row rules are those of models/staging/landing/base/base_landing__plans.sql
-- (a row breaking any of them is quarantined), flagged by checked_plan_rows (_macros.sql);
-- tests/test_quality.py keeps them in step.
with

checked as (
    select * from checked_plan_rows()
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
