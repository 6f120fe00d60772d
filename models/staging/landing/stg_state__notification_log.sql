select * from {{ source('raw', 'notification_log') }}
