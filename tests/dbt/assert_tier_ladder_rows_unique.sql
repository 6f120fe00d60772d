-- Each (product_key, user_tier) of the tier ladder seed appears once.
select
    product_key,
    user_tier,
    count(*) as copies
from {{ ref('tier_ladder') }}
group by product_key, user_tier
having count(*) > 1
