with

source as (
    select * from {{ source('raw', 'instances') }}
),

parsed as (
    select
        trim(instance_id) as instance_id,
        trim(plan_id) as plan_id,
        trim(instance_name) as instance_name,
        trim(site_url) as site_url,
        _file_name as file_name,
        _row_number as row_number,
        _load_id as load_id
    from source
),

checked as (
    select
        *,
        {{ first_failed_check([
            (is_blank('instance_id'), "'missing instance_id'"),
            (is_blank('plan_id'), "'missing plan_id'"),
        ]) }} as quarantine_reason
    from parsed
)

select * from checked
