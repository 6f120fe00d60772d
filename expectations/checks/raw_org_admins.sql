-- Check table of the suite raw_org_admins: one row of counts over raw.org_admins.
-- The row rules are those of models/staging/landing/base/base_landing__org_admins.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
with

admins as (
    select
        present(org_id) as org_id,
        present(email) as email
    from raw.org_admins
),

flagged as (
    select
        *,
        org_id is null as is_missing_org_id,
        email is null as is_missing_email,
        coalesce(email not like '%_@_%', false) as is_invalid_email
    from admins
),

rules as (
    select
        count(*) as rows_loaded,
        count(*) filter (where is_missing_org_id) as missing_org_id_rows,
        count(*) filter (where is_missing_email) as missing_email_rows,
        count(*) filter (where is_invalid_email) as invalid_email_rows,
        count(*) filter (where is_missing_org_id or is_missing_email or is_invalid_email)
            as failed_rule_rows
    from flagged
)

select * from raw_check_table('rules', 'org_admins', ['org_id', 'email'])
