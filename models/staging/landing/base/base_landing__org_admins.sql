with

source as (
    select * from {{ source('raw', 'org_admins') }}
),

parsed as (
    select
        trim(org_id) as org_id,
        trim(email) as email,
        trim(display_name) as display_name,
        _file_name as file_name,
        _row_number as row_number,
        _load_id as load_id
    from source
),

checked as (
    select
        *,
        {{ first_failed_check([
            (is_blank('org_id'), "'missing org_id'"),
            (is_blank('email'), "'missing email'"),
            ("email not like '%_@_%'", "'not an email address: ' || email"),
        ]) }} as quarantine_reason
    from parsed
)

select * from checked
