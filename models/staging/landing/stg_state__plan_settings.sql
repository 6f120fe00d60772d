select
    plan_id,
    notify_at_80,
    updated_at
from {{ source('raw', 'plan_settings') }}
