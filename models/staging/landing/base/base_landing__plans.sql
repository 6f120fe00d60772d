with

source as (
    select * from {{ source('raw', 'plans') }}
),

parsed as (
    select
        trim(plan_id) as plan_id,
        trim(org_id) as org_id,
        trim(plan_name) as plan_name,
        lower(trim(product_key)) as product_key,
        lower(trim(plan_type)) as plan_type,
        lower(trim(billing_cycle)) as billing_cycle,
        {{ parse_integer('user_tier') }} as user_tier,
        user_tier as user_tier_text,
        {{ parse_date('renewal_date') }} as renewal_date,
        renewal_date as renewal_date_text,
        {{ parse_timestamp('updated_at') }} as updated_at,
        updated_at as updated_at_text,
        _file_name as file_name,
        _row_number as row_number,
        _load_id as load_id
    from source
),

checked as (
    select
        *,
        {{ first_failed_check([
            (is_blank('plan_id'), "'missing plan_id'"),
            (is_blank('org_id'), "'missing org_id'"),
            (is_blank('plan_type'), "'missing plan_type'"),
            ("plan_type not in ('product', 'marketplace_app', 'guard_standard')",
                "'unknown plan_type: ' || plan_type"),
            (is_blank('billing_cycle'), "'missing billing_cycle'"),
            ("billing_cycle not in ('annual', 'monthly')",
                "'unknown billing_cycle: ' || billing_cycle"),
            (is_blank('user_tier_text'), "'missing user_tier'"),
            ("user_tier is null", "'unparseable user_tier: ' || user_tier_text"),
            ("user_tier <= 0", "'user_tier must be greater than 0: ' || user_tier_text"),
            ("renewal_date is null and not " ~ is_blank('renewal_date_text'),
                "'unparseable renewal_date: ' || renewal_date_text"),
            (is_blank('updated_at_text'), "'missing updated_at'"),
            ("updated_at is null", "'unparseable updated_at: ' || updated_at_text"),
        ]) }} as quarantine_reason
    from parsed
)

select * from checked
