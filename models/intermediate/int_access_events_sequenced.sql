{{ config(materialized='view') }}
-- Each access event with the pair's state before and after it (the contract's state table;
-- macros/access_states.sql). A view: int_access_state_intervals sequences the events itself,
-- pair by pair, so that a night recomputes only the pairs it touches.
with

events as (
    select * from {{ ref('stg_landing__access_events') }}
),

{{ sequence_access_events('events') }},

final as (
    select * from sequenced
)

select * from final
