-- Check table of the suite raw_users: one row of counts over raw.users.
-- The row rules are those of models/staging/landing/base/base_landing__users.sql
-- (a row breaking any of them is quarantined); tests/test_quality.py keeps them in step.
with

users as (
    select
        present(user_id) as user_id,
        lower(present(account_type)) as account_type,
        lower(present(is_billable)) as is_billable
    from raw.users
),

flagged as (
    select
        *,
        user_id is null as is_missing_user_id,
        account_type is null as is_missing_account_type,
        coalesce(account_type not in ('atlassian', 'app', 'customer'), false)
            as is_unknown_account_type,
        coalesce(
            is_billable not in ('true', 't', '1', 'yes', 'y', 'false', 'f', '0', 'no', 'n'),
            false
        ) as is_unparseable_is_billable
    from users
),

rules as (
    select
        count(*) as rows_loaded,
        count(*) filter (where is_missing_user_id) as missing_user_id_rows,
        count(*) filter (where is_missing_account_type) as missing_account_type_rows,
        count(*) filter (where is_unknown_account_type) as unknown_account_type_rows,
        count(*) filter (where is_unparseable_is_billable) as unparseable_is_billable_rows,
        count(*) filter (where
            is_missing_user_id or is_missing_account_type or is_unknown_account_type
            or is_unparseable_is_billable
        ) as failed_rule_rows
    from flagged
)

select * from raw_check_table('rules', 'users', ['user_id', 'account_type'])
