"""Deterministic synthetic landing data (data-contract section 1), generated in DuckDB SQL."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from usercounts.config import SOURCES

# Atlassian's user-tier ladder; random plans take their tiers from it.
LADDER: tuple[int, ...] = (
    10, 25, 50, 100, 200, 250, 300, 400, 500, 600, 700, 800, 900, 1000, 1500,
    2000, 2500, 3000, 4000, 5000, 10000, 15000, 20000, 25000, 30000, 35000,
    40000, 45000, 50000, 100000,
)  # fmt: skip

DEMO_END_DATE = date(2026, 11, 20)
ONE_DAY = timedelta(days=1)

FIRST_NAMES: tuple[str, ...] = (
    "Ada", "Alan", "Amara", "Ana", "Arjun", "Ben", "Carla", "Chen", "Dario", "Dana",
    "Elena", "Emeka", "Farah", "Felix", "Grace", "Hana", "Hugo", "Ines", "Ivan", "Jamal",
    "Julia", "Kai", "Kenji", "Lara", "Leo", "Lina", "Marco", "Maya", "Mei", "Nadia",
    "Noah", "Olga", "Omar", "Priya", "Quinn", "Rafael", "Rosa", "Sami", "Sofia", "Tariq",
    "Tess", "Uma", "Victor", "Wen", "Xavier", "Yara", "Yusuf", "Zoe",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Abara", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hall", "Ito",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Quist",
    "Rossi", "Silva", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz", "Zhang",
    "Ahmed", "Brown", "Chowdhury", "Dias", "Evans", "Fontaine", "Gupta", "Haddad",
    "Ivanova", "Johansson", "Kim", "Lindqvist", "Mensah", "Novak", "Olsen", "Park",
    "Reyes", "Schmidt", "Torres", "Vogel", "Wright", "Young",
)  # fmt: skip
ORG_ADJECTIVES: tuple[str, ...] = (
    "Blue", "Bright", "Cedar", "Copper", "Crimson", "Delta", "Eastern", "Golden", "Granite",
    "Harbor", "Iron", "Jade", "Lunar", "Maple", "Nimble", "Northern", "Oak", "Pacific",
    "Polar", "Quantum", "Rapid", "Silver", "Solar", "Summit", "True", "Vivid",
)  # fmt: skip
ORG_NOUNS: tuple[str, ...] = (
    "Analytics", "Bank", "Bikes", "Biotech", "Capital", "Dynamics", "Energy", "Foods",
    "Games", "Health", "Labs", "Logistics", "Media", "Motors", "Networks", "Robotics",
    "Software", "Studios", "Systems", "Telecom", "Travel", "Works",
)  # fmt: skip
# (product_key, display name) of marketplace apps; slot 2 draws from the first half,
# slot 3 from the second, so one org never holds the same app twice.
APPS: tuple[tuple[str, str], ...] = (
    ("tempo-timesheets", "Tempo Timesheets"),
    ("scriptrunner", "ScriptRunner"),
    ("zephyr-scale", "Zephyr Scale"),
    ("jsu-automation", "JSU Automation Suite"),
    ("drawio", "draw.io Diagrams"),
    ("gliffy", "Gliffy Diagrams"),
    ("xray", "Xray Test Management"),
    ("bigpicture", "BigPicture"),
)
BOTS: tuple[str, ...] = (
    "Automation for Jira", "Slack", "Microsoft Teams", "GitHub for Jira", "Opsgenie",
    "Statuspage", "Zendesk", "Salesforce", "Trello", "Jenkins",
)  # fmt: skip

# One-row settings live in DuckDB variables so every statement below is a fixed string.
_MACROS = """
-- A uniform double in [0, 1) per (seed, key, salt). hash() of several values combines
-- them so that two salts give strongly correlated results; hashing again decorrelates.
create or replace temp macro u01(i, salt) as
    (hash(hash(getvariable('seed'), i, salt)) >> 11)::double / 9007199254740992.0;
create or replace temp macro u02(i, j, salt) as
    (hash(hash(getvariable('seed'), i, j, salt)) >> 11)::double / 9007199254740992.0;
create or replace temp macro pick(lst, i, salt) as
    lst[1 + floor(u01(i, salt) * len(lst))::bigint];
create or replace temp macro ts_of(s) as make_timestamp(s * 1000000);
"""

# Random orgs and plans: ~users/2000 orgs, each with 2-4 plans of 1-3 instances.
_RANDOM_SPEC = """
create table org as
with base as (
    select
        o as org_idx,
        pick(getvariable('adjectives'), o, 'org_adj') || ' '
            || pick(getvariable('nouns'), o, 'org_noun') as base_name,
        -- roughly log-normal org sizes (sum of three uniforms ~ normal)
        floor(1000 * exp(2 * (u01(o, 'w1') + u01(o, 'w2') + u01(o, 'w3') - 1.5)))::bigint + 1
            as weight,
        -- 5% of orgs have no admins, never the first: an org_admins file with no rows
        -- would stop the run (a critical check), and a small landing may have one org
        case
            when o > 0 and u01(o, 'admins') < 0.05 then 0
            else 1 + floor(u01(o, 'n_admins') * 3)::bigint
        end as n_admins
    from range(getvariable('n_orgs')) as r (o)
),
named as (
    select
        *,
        row_number() over (partition by base_name order by org_idx) as name_rank
    from base
)
select
    org_idx,
    printf('org-%05d', org_idx) as org_id,
    base_name || case when name_rank > 1 then ' ' || name_rank else '' end as org_name,
    lower(replace(base_name, ' ', '-'))
        || case when name_rank > 1 then '-' || name_rank else '' end as slug,
    weight,
    n_admins
from named;

create table plan_spec as
with slots as (
    select
        o.org_idx,
        o.org_name,
        s.slot,
        o.org_idx * 4 + s.slot as k,
        u01(o.org_idx * 4 + s.slot, 'kind') as r_kind
    from org as o
    inner join range(4) as s (slot)
        on s.slot < 2 + floor(u01(o.org_idx, 'n_plans') * 3)
),
keyed as (
    select
        *,
        case
            when slot = 0 then 'jira-software'
            when slot = 1 then 'confluence'
            when slot = 2 and r_kind < 0.65 then 'jira-service-management'
            when slot = 3 and r_kind < 0.5 then 'guard'
        end as core_key,
        getvariable('apps')[(slot - 2) * 4 + 1 + floor(u01(k, 'app') * 4)::bigint] as app
    from slots
)
select
    k as plan_idx,
    printf('plan-%05d-%d', org_idx, slot) as plan_id,
    org_idx,
    org_name || ' ' || case core_key
        when 'jira-software' then 'Jira'
        when 'confluence' then 'Confluence'
        when 'jira-service-management' then 'Jira Service Management'
        when 'guard' then 'Guard'
        else app.name
    end as plan_name,
    coalesce(core_key, app.key) as product_key,
    case
        when core_key = 'guard' then 'annual'
        when u01(k, 'cycle') < case when core_key is null then 0.35 else 0.2 end then 'monthly'
        else 'annual'
    end as billing_cycle,
    floor([1000, 700, 350, 200][slot + 1] * (0.5 + u01(k, 'pw')))::bigint + 1 as weight,
    case
        when u01(k, 'target') < 0.70 then 'ok'
        when u01(k, 'target') < 0.88 then 'approaching'
        else 'over_limit'
    end as target,
    u01(k, 'upgrade') < 0.12 as upgrade,
    1 + (u01(k, 'n_inst') < 0.4)::int + (u01(k, 'n_inst') < 0.12)::int as n_inst,
    printf('inst-%05d-%d', org_idx, slot) as inst_prefix
from keyed;
"""

# The bundled demo: hand-picked orgs and plans, each plan with the threshold state it
# must show at the demo's as-of date; tiers are fitted to the generated counts.
_DEMO_SPEC = """
create table org as
select * from (values
    (0, 'acme', 'Acme', 'acme', 90, 2),
    (1, 'globex', 'Globex', 'globex', 70, 1),
    (2, 'initech', 'Initech', 'initech', 50, 0),
    (3, 'umbrella', 'Umbrella', 'umbrella', 60, 2),
    (4, 'hooli', 'Hooli', 'hooli', 55, 1),
    (5, 'stark', 'Stark Industries', 'stark', 55, 3)
) as t (org_idx, org_id, org_name, slug, weight, n_admins);

create table plan_spec as
select *, plan_id as inst_prefix from (values
    (0, 'acme-jira', 0, 'Acme Jira', 'jira-software', 'annual', 1000,
        'approaching', false, 2),
    (1, 'acme-confluence', 0, 'Acme Confluence', 'confluence', 'annual', 700,
        'ok', true, 1),
    (2, 'acme-tempo', 0, 'Acme Tempo Timesheets', 'tempo-timesheets', 'annual', 300,
        'ok', false, 1),
    (3, 'globex-jira', 1, 'Globex Jira', 'jira-software', 'monthly', 1000,
        'approaching', false, 1),
    (4, 'globex-jsm', 1, 'Globex Jira Service Management', 'jira-service-management',
        'annual', 500, 'ok', false, 1),
    (5, 'globex-guard', 1, 'Globex Guard', 'guard', 'annual', 400, 'ok', false, 1),
    (6, 'initech-confluence', 2, 'Initech Confluence', 'confluence', 'annual', 1000,
        'at_limit', false, 1),
    (7, 'initech-jira', 2, 'Initech Jira', 'jira-software', 'annual', 700, 'ok', false, 1),
    (8, 'umbrella-jira', 3, 'Umbrella Jira', 'jira-software', 'annual', 1000,
        'over_limit', true, 2),
    (9, 'umbrella-confluence', 3, 'Umbrella Confluence', 'confluence', 'monthly', 600,
        'ok', false, 1),
    (10, 'hooli-jira', 4, 'Hooli Jira', 'jira-software', 'monthly', 1000,
        'over_limit', false, 1),
    (11, 'hooli-jsm', 4, 'Hooli Jira Service Management', 'jira-service-management',
        'annual', 700, 'at_limit', false, 1),
    (12, 'stark-jira', 5, 'Stark Industries Jira', 'jira-software', 'annual', 1000,
        'ok', false, 1),
    (13, 'stark-drawio', 5, 'Stark Industries draw.io Diagrams', 'drawio', 'monthly', 500,
        'approaching', false, 1)
) as t (
    plan_idx, plan_id, org_idx, plan_name, product_key, billing_cycle, weight,
    target, upgrade, n_inst
);
"""

# Everything after the org and plan specs: instances, users, events, last-seen, tiers.
# Times are epoch seconds (bigint) until written out.
_PIPELINE = """
create table plan as
select
    *,
    case
        when product_key in ('jira-software', 'confluence', 'jira-service-management')
            then 'product'
        when product_key = 'guard' then 'guard_standard'
        else 'marketplace_app'
    end as plan_type
from plan_spec;

create table inst as
select
    p.plan_idx * 4 + k.k as inst_idx,
    p.plan_idx,
    p.org_idx,
    p.inst_prefix || '-' || (k.k + 1) as instance_id,
    o.slug || ['', '-eu', '-us'][k.k + 1] as instance_name,
    'https://' || o.slug || ['', '-eu', '-us'][k.k + 1] || '.atlassian.net' as site_url,
    p.weight * case
        when k.k = 0 then 1000 else 300 + floor(u01(p.plan_idx * 4 + k.k, 'iw') * 500)::bigint
    end as weight
from plan as p
inner join org as o on p.org_idx = o.org_idx
inner join range(3) as k (k) on k.k < p.n_inst;

-- Integer cumulative weights: float sums could round differently between runs.
create table org_cum as
select
    org_idx,
    coalesce(sum(weight) over (order by org_idx rows between unbounded preceding
        and 1 preceding), 0) as cum_lo,
    sum(weight) over () as total
from org;

create table usr as
with drawn as (
    select
        i as uidx,
        -- the demo spreads users over orgs exactly by weight; random runs draw
        case
            when getvariable('demo')
                then floor((i + 0.5) * (select any_value(total) from org_cum)
                    / getvariable('n_users'))::bigint
            else floor(u01(i, 'org') * (select any_value(total) from org_cum))::bigint
        end as r_org,
        u01(i, 'acct') as r_acct,
        u01(i, 'billable') as r_bill,
        u01(i, 'join') as r_join
    from range(getvariable('n_users')) as t (i)
)
select
    d.uidx,
    c.org_idx,
    case when d.r_acct < 0.03 then 'app' when d.r_acct < 0.07 then 'customer'
        else 'atlassian' end as account_type,
    case
        when d.r_acct < 0.03 then false
        when d.r_acct < 0.07 then d.r_bill >= 0.5
        else d.r_bill >= 0.01
    end as is_billable,
    -- a cohort migrated in the first month, the rest join through the window
    getvariable('start_s') + case
        when d.r_join < 0.3 then floor(u01(d.uidx, 'join_t') * 30 * 86400)::bigint
        else floor(u01(d.uidx, 'join_t')
            * (getvariable('end_s') - getvariable('start_s')))::bigint
    end as t_join,
    case when u01(d.uidx, 'n_assign') < 0.2 then 1
        when u01(d.uidx, 'n_assign') < 0.65 then 2 else 3 end as n_assign
from drawn as d
asof inner join org_cum as c on d.r_org >= c.cum_lo;

-- Each user gets 1-3 distinct instances of its org's plans, drawn by weight without
-- replacement (exponential keys: the smallest -ln(u)/weight win).
create table pair as
with keyed as (
    select
        u.uidx,
        u.t_join,
        u.n_assign,
        i.inst_idx,
        -ln(1 - u02(u.uidx, i.inst_idx, 'pick')) / i.weight as draw
    from usr as u
    inner join inst as i on u.org_idx = i.org_idx
),
ranked as (
    select
        *,
        row_number() over (partition by uidx order by draw, inst_idx) - 1 as j
    from keyed
)
select uidx, inst_idx, j, t_join, uidx * 4 + j as pkey
from ranked
where j < n_assign;

create table pt_base as
with a as (
    select
        *,
        getvariable('end_s') as e,
        case
            when j = 0 then t_join
            else t_join + floor((getvariable('end_s') - t_join) * 0.6 * u01(pkey, 't0'))::bigint
        end as t0,
        u01(pkey, 'kind') < 0.10 as invited_only
    from pair
),
b as (
    select
        *,
        case when invited_only or u01(pkey, 'invite') < 0.7 then t0 end as t_inv,
        case
            when invited_only then null
            when u01(pkey, 'invite') < 0.7
                -- accepted 10 minutes to 14 days after the invite, most within a day
                then t0 + 600 + floor(pow(u01(pkey, 'delay'), 3) * 14 * 86400)::bigint
            else t0
        end as t_grant_raw
    from a
)
select
    *,
    case when t_grant_raw < e then t_grant_raw end as t_grant,
    coalesce(case when t_grant_raw < e then t_grant_raw end, t_inv) as t_last
from b;

create table pt as
with r as (
    select
        *,
        case
            when u01(pkey, 'revoke') < 0.22 and e - t_last > 7200
                then t_last + 3600 + floor(u01(pkey, 'revoke_t') * (e - t_last - 3600))::bigint
        end as t_rev
    from pt_base
),
g as (
    select
        *,
        case
            when t_rev is not null and t_grant is not null and u01(pkey, 'regrant') < 0.3
                and e - t_rev > 7200
                then t_rev + 3600 + floor(u01(pkey, 'regrant_t') * (e - t_rev - 3600))::bigint
        end as t_reg,
        -- a re-invite of an active user (a no-op in the state table)
        case
            when t_grant is not null and u01(pkey, 'reinvite') < 0.04
                then t_grant + 60 + floor(u01(pkey, 'reinvite_t') * 3 * 86400)::bigint
        end as t_rei_raw
    from r
)
select
    *,
    case when t_rei_raw < coalesce(t_rev, e) then t_rei_raw end as t_rei,
    case
        when t_reg is not null and u01(pkey, 'reg_invite') < 0.5
            then t_rev + 1 + floor(u01(pkey, 'reg_invite_t') * (t_reg - t_rev - 1))::bigint
    end as t_reg_inv
from g;

create table ev as
select pkey * 8 as eid, t_inv as ts, inst_idx, uidx, 'invite' as action
from pt where t_inv is not null
union all
select pkey * 8 + 1, t_grant, inst_idx, uidx, 'grant' from pt where t_grant is not null
union all
select pkey * 8 + 2, t_rei, inst_idx, uidx, 'invite' from pt where t_rei is not null
union all
select pkey * 8 + 3, t_rev, inst_idx, uidx, 'revoke' from pt where t_rev is not null
union all
select pkey * 8 + 4, t_reg_inv, inst_idx, uidx, 'invite' from pt where t_reg_inv is not null
union all
select pkey * 8 + 5, t_reg, inst_idx, uidx, 'grant' from pt where t_reg is not null;

-- Most ever-active pairs were seen, mostly recently; some have an older extra observation.
create table ls as
with seen as (
    select
        pkey,
        inst_idx,
        uidx,
        t_grant,
        case when t_rev is not null and t_reg is null then t_rev else e end as stop
    from pt
    where t_grant is not null and u01(pkey, 'seen') < 0.9
),
latest as (
    select
        *,
        stop - 1 - floor((stop - 1 - t_grant) * pow(u01(pkey, 'seen_t'), 3))::bigint as ts
    from seen
)
select inst_idx, uidx, ts from latest
union all
select inst_idx, uidx, t_grant + floor((ts - t_grant) * u01(pkey, 'older_t'))::bigint
from latest
where u01(pkey, 'older') < 0.2;

-- Access at the end: the last event per (instance, user) is an invite or a grant.
create table plan_count as
with last_event as (
    -- eid % 8 is the event's place in its pair: (ts, eid) order within one pair
    select inst_idx, uidx, arg_max(action, ts * 8 + eid % 8) as action
    from ev
    group by inst_idx, uidx
)
select p.plan_idx, count(distinct l.uidx) filter (where l.action <> 'revoke') as n
from plan as p
left join inst as i on p.plan_idx = i.plan_idx
left join last_event as l on i.inst_idx = l.inst_idx
group by p.plan_idx;

create table ladder as
select unnest(getvariable('ladder')) as tier,
    generate_subscripts(getvariable('ladder'), 1) - 1 as rung;

create table plan_tier as
with rungs as (
    select
        p.plan_idx,
        p.target,
        p.upgrade,
        c.n,
        min(l.rung) filter (where 5 * c.n < 4 * l.tier) as ok_rung,
        min(l.rung) filter (where l.tier > c.n) as approaching_rung,
        max(l.rung) filter (where l.tier <= c.n) as over_rung,
        max(l.rung) as top_rung
    from plan as p
    inner join plan_count as c on p.plan_idx = c.plan_idx
    cross join ladder as l
    group by p.plan_idx, p.target, p.upgrade, c.n
),
chosen as (
    select
        *,
        case target
            when 'ok' then least(
                coalesce(ok_rung, top_rung) + floor(u01(plan_idx, 'ok_step') * 3)::bigint,
                top_rung)
            when 'approaching' then coalesce(approaching_rung, top_rung)
            else coalesce(over_rung, 0)
        end as rung
    from rungs
),
tiers as (
    select
        *,
        case
            -- the demo fits exact tiers so each plan shows its threshold state
            when getvariable('demo') then case target
                when 'ok' then greatest(10, (2 * n + 4) // 5 * 5)
                when 'approaching' then (10 * n + 8) // 9
                when 'at_limit' then n
                else n - greatest(1, n // 8)
            end
            else getvariable('ladder')[rung + 1]
        end as tier,
        case
            when not upgrade then null
            when getvariable('demo') then greatest(5, n // 2)
            when rung > 0
                then getvariable('ladder')[
                    greatest(0, rung - 1 - floor(u01(plan_idx, 'old_step') * 2)::bigint) + 1]
        end as old_tier
    from chosen
)
select plan_idx, target, n, tier, old_tier from tiers;

create table plan_version as
with dated as (
    select
        p.*,
        t.tier,
        t.old_tier,
        getvariable('start_s') - (30 + floor(u01(p.plan_idx, 'created') * 400)::bigint) * 86400
            as created_s,
        getvariable('start_s') + floor((getvariable('end_s') - getvariable('start_s'))
            * (0.3 + 0.5 * u01(p.plan_idx, 'upgraded')))::bigint as upgraded_s,
        getvariable('end_date') + case p.billing_cycle
            when 'monthly' then 1 + floor(u01(p.plan_idx, 'renewal') * 30)::integer
            else 1 + floor(u01(p.plan_idx, 'renewal') * 365)::integer
        end as renewal_date
    from plan as p
    inner join plan_tier as t on p.plan_idx = t.plan_idx
)
select
    *,
    old_tier as user_tier,
    created_s as updated_s,
    (renewal_date - case billing_cycle
        when 'monthly' then interval 1 month else interval 1 year end)::date as version_renewal
from dated
where old_tier is not null
union all
select
    *,
    tier,
    case when old_tier is null then created_s else upgraded_s end,
    renewal_date
from dated;
"""

# One select per landing source; each has a total order so files are byte-identical.
_OUTPUTS: dict[str, str] = {
    "plans": """
        select
            v.plan_id, o.org_id, v.plan_name, v.product_key, v.plan_type, v.billing_cycle,
            v.user_tier::integer as user_tier, v.version_renewal as renewal_date,
            ts_of(v.updated_s) as updated_at
        from plan_version as v
        inner join org as o on v.org_idx = o.org_idx
        order by v.plan_id, v.updated_s
    """,
    "instances": """
        select i.instance_id, p.plan_id, i.instance_name, i.site_url
        from inst as i
        inner join plan as p on i.plan_idx = p.plan_idx
        order by i.instance_id
    """,
    "users": """
        with named as (
            select
                u.uidx,
                u.account_type,
                u.is_billable,
                floor(u01(u.uidx, 'first') * len(getvariable('first_names')))::bigint + 1
                    as first_idx,
                floor(u01(u.uidx, 'last') * len(getvariable('last_names')))::bigint + 1
                    as last_idx,
                -- customers share one mail domain, colleagues their org's
                case when u.account_type = 'customer' then -1 else u.org_idx end as domain_idx,
                case u.account_type
                    when 'app' then '@apps.example.com'
                    when 'customer' then '@mail.example.net'
                    else '@' || o.slug || '.example.com'
                end as domain
            from usr as u
            inner join org as o on u.org_idx = o.org_idx
        ),
        ranked as (
            select
                *,
                getvariable('first_names')[first_idx] || ' '
                    || getvariable('last_names')[last_idx] as person_name,
                row_number() over (
                    partition by domain_idx, first_idx, last_idx order by uidx) as name_rank
            from named
        )
        select
            printf('u-%07d', uidx) as user_id,
            case when account_type = 'app' then 'bot-' || uidx || domain
                else lower(replace(person_name, ' ', '.'))
                    || case when name_rank > 1 then name_rank::varchar else '' end || domain
            end as email,
            case when account_type = 'app' then pick(getvariable('bots'), uidx, 'bot')
                else person_name end as display_name,
            account_type,
            is_billable
        from ranked
        order by uidx
    """,
    "org_admins": """
        select
            o.org_id,
            lower(f.name || '.' || l.name) || '@' || o.slug || '.example.com' as email,
            f.name || ' ' || l.name as display_name
        from org as o
        inner join range(3) as a (a) on a.a < o.n_admins
        -- distinct first names keep admin emails unique within an org
        cross join lateral (
            select getvariable('first_names')[
                1 + (floor(u01(o.org_idx, 'admin_first') * len(getvariable('first_names')))
                    ::bigint + a.a * 7) % len(getvariable('first_names'))] as name
        ) as f
        cross join lateral (
            select pick(getvariable('last_names'), o.org_idx * 4 + a.a, 'admin_last') as name
        ) as l
        order by o.org_id, a.a
    """,
    "access_events": """
        with dup as (
            select * from ev
            union all
            -- some events delivered twice (0.1%; more in the small demo) to exercise dedup
            select * from ev where u01(eid, 'duplicate') < getvariable('dup_rate')
        )
        select
            printf('ev-%010d', d.eid) as event_id,
            ts_of(d.ts) as occurred_at,
            i.instance_id,
            printf('u-%07d', d.uidx) as user_id,
            d.action
        from dup as d
        inner join inst as i on d.inst_idx = i.inst_idx
        order by d.ts, d.eid
    """,
    "last_seen": """
        select
            i.instance_id,
            printf('u-%07d', s.uidx) as user_id,
            ts_of(s.ts) as last_seen_at
        from ls as s
        inner join inst as i on s.inst_idx = i.inst_idx
        order by i.instance_id, s.uidx, s.ts
    """,
}

# Sources that can be split into nightly drops: (time column, the order of their rows).
_NIGHTLY: dict[str, tuple[str, str]] = {
    "access_events": ("occurred_at", "occurred_at, event_id"),
    "last_seen": ("last_seen_at", "instance_id, user_id, last_seen_at"),
}

_COPY_OPTIONS = {
    "parquet": "(format parquet, compression zstd)",
    "csv": "(format csv, header true, timestampformat '%Y-%m-%dT%H:%M:%SZ')",
}


def _epoch(day: date) -> int:
    """Seconds since 1970-01-01 UTC at the start of a day."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _months_before(day: date, months: int) -> date:
    """The same day of the month `months` earlier (clamped to the month's end)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    next_first = date(year + (month == 12), month % 12 + 1, 1)
    return date(year, month, min(day.day, (next_first - timedelta(days=1)).day))


def _connect(
    *, seed: int, users: int, orgs: int, end_date: date, months: int, demo: bool, spill: str
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the run's settings as variables and the helper macros."""
    # Fixed threads so output never depends on the machine; spill outside the caller's cwd.
    con = duckdb.connect(config={"threads": 2, "memory_limit": "2GB", "temp_directory": spill})
    con.execute("set timezone = 'UTC'")
    end = end_date + timedelta(days=1)
    settings: dict[str, object] = {
        "seed": seed,
        "n_users": users,
        "n_orgs": orgs,
        "end_date": end_date,
        "start_s": _epoch(_months_before(end, months)),
        "end_s": _epoch(end),
        "demo": demo,
        "dup_rate": 0.005 if demo else 0.001,
        "ladder": list(LADDER),
        "first_names": list(FIRST_NAMES),
        "last_names": list(LAST_NAMES),
        "adjectives": list(ORG_ADJECTIVES),
        "nouns": list(ORG_NOUNS),
        "bots": list(BOTS),
        "apps": [{"key": k, "name": n} for k, n in APPS],
    }
    for name, value in settings.items():
        # names are our own constants; values travel as parameters
        con.execute(f"set variable {name} = ?", [value])
    con.execute("set variable seed = getvariable('seed')::bigint")
    con.execute(_MACROS)
    return con


def _write(
    con: duckdb.DuckDBPyConnection, out_dir: Path, fmt: str, daily_files: int = 0
) -> dict[str, int]:
    """COPY every source to <out_dir>/<source>/<source>_0001.<fmt>; rows written per source.

    With daily_files = N, the last N days of access_events and last_seen go to one file per
    UTC day instead (<source>_<YYYY-MM-DD>.<fmt>, sorting after _0001), as nightly drops.
    """
    written: dict[str, int] = {}
    end = con.execute("select getvariable('end_date')::date").fetchone()[0] + ONE_DAY
    cutoff = end - timedelta(days=daily_files)
    for source in SOURCES:
        folder = out_dir / source
        folder.mkdir(parents=True, exist_ok=True)
        parts: list[tuple[str, str, list[object]]] = [(f"{source}_0001", _OUTPUTS[source], [])]
        if daily_files and source in _NIGHTLY:
            column, order = _NIGHTLY[source]
            # column and order are our own constants; the bounds travel as parameters
            split = f"select * from ({_OUTPUTS[source]}) where {column} >= ? and {column} < ? "  # noqa: S608
            parts = [(f"{source}_0001", split + f"order by {order}", [date(1, 1, 1), cutoff])]
            parts += [
                (f"{source}_{day.isoformat()}", split + f"order by {order}", [day, day + ONE_DAY])
                for day in (cutoff + timedelta(days=i) for i in range(daily_files))
            ]
        written[source] = 0
        for stem, query, bounds in parts:
            path = folder / f"{stem}.{fmt}"
            sql = "copy (" + query + ") to ? " + _COPY_OPTIONS[fmt]
            row = con.execute(sql, [*bounds, str(path)]).fetchone()
            written[source] += int(row[0]) if row else 0
    return written


def check_arguments(
    *, fmt: str = "parquet", users: int = 1, orgs: int = 1, months: int = 1, daily_files: int = 0
) -> None:
    """Raise ValueError, in words a user of `usercounts generate` reads, for what cannot be
    written."""
    if fmt not in _COPY_OPTIONS:
        raise ValueError(f"format must be one of {sorted(_COPY_OPTIONS)}, not {fmt!r}")
    if users < 1 or orgs < 1 or months < 1:
        raise ValueError("users, orgs and months must be at least 1")
    if not 0 <= daily_files <= 28 * months:
        # 28: the shortest month, so that the days split off always lie inside the window
        raise ValueError(
            f"--daily-files must be between 0 and 28 x months ({28 * months}), not {daily_files}"
        )


@contextmanager
def _generated(
    out_dir: Path,
    *,
    spec: str,
    users: int,
    orgs: int,
    seed: int,
    fmt: str,
    end_date: date,
    months: int,
    demo: bool,
    daily_files: int = 0,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict[str, int]]]:
    """Run the spec and the pipeline and write the files; yield the connection for checks."""
    check_arguments(fmt=fmt, users=users, orgs=orgs, months=months, daily_files=daily_files)
    with tempfile.TemporaryDirectory(prefix="usercounts-generate-") as spill:
        con = _connect(
            seed=seed,
            users=users,
            orgs=orgs,
            end_date=end_date,
            months=months,
            demo=demo,
            spill=spill,
        )
        try:
            con.execute(spec)
            con.execute(_PIPELINE)
            yield con, _write(con, Path(out_dir), fmt, daily_files)
        finally:
            con.close()


def generate(
    out_dir: Path,
    *,
    users: int = 1000,
    orgs: int | None = None,
    seed: int = 42,
    fmt: str = "parquet",
    end_date: date = date(2026, 11, 20),
    months: int = 24,
    daily_files: int = 0,
) -> dict[str, int]:
    """Write a landing folder; return rows written per source.

    daily_files = N writes the last N days of access_events and last_seen as one file per
    day (nightly drops, for incremental runs and benchmarks) instead of in the main file.
    """
    n_orgs = orgs if orgs is not None else max(1, users // 2000)
    with _generated(
        out_dir,
        spec=_RANDOM_SPEC,
        users=users,
        orgs=n_orgs,
        seed=seed,
        fmt=fmt,
        end_date=end_date,
        months=months,
        demo=False,
        daily_files=daily_files,
    ) as (_, written):
        return written


def generate_demo(out_dir: Path) -> dict[str, int]:
    """Write the small bundled demo landing folder as CSV."""
    with _generated(
        out_dir,
        spec=_DEMO_SPEC,
        users=380,
        orgs=6,
        seed=7,
        fmt="csv",
        end_date=DEMO_END_DATE,
        months=24,
        demo=True,
    ) as (con, written):
        # The demo promises every threshold state: fail loudly if a change broke that.
        missed = con.execute("""
            select plan_id, target, n, tier
            from plan_tier
            inner join plan using (plan_idx, target)
            where n <= 0 or tier <= 0 or target <> case
                when n > tier then 'over_limit'
                when n = tier then 'at_limit'
                when 5 * n >= 4 * tier then 'approaching'
                else 'ok'
            end
        """).fetchall()
    if missed:
        raise RuntimeError(f"demo plans miss their threshold state: {missed}")
    return written
