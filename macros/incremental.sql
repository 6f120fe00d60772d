{#- Incremental builds. The run appends a row to raw.builds after each successful build
    (usercounts/incremental.py); an incremental model adds what changed since that build:
    rows loaded since (load_id > its load_id) and events the new as-of instant uncovers
    (at or after its as-of instant). The run rebuilds from scratch whenever adding could
    differ from rebuilding (docs/operations.md), so incremental models may assume that
    rows are only ever added, that a new row never wins over an older one of the same key
    (first read per event_id) and that the as-of date never goes back. -#}

{#- The last successful build: {'load_id': N, 'as_of_date': 'YYYY-MM-DD'}, or none when
    this build starts from scratch (no build yet, or dbt --full-refresh). Only `dbt build`
    and `dbt run` read it (other commands show the full-build SQL), unless
    USERCOUNTS_LINT_LAST_BUILD is set to anything: `./dev.sh lint` sets it so that sqlfluff's
    compile reads its scratch build's, and lints the models' SQL that depends on it. -#}
{% macro previous_build() %}
    {%- if not execute or flags.FULL_REFRESH or (
        flags.WHICH not in ('build', 'run') and env_var('USERCOUNTS_LINT_LAST_BUILD', '') == ''
    ) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set builds = adapter.get_relation(
        database=target.database, schema='raw', identifier='builds'
    ) -%}
    {%- if builds is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set result = run_query(
        'select coalesce(load_id, 0), cast(as_of_date as varchar) from '
        ~ builds ~ ' order by build_number desc limit 1'
    ) -%}
    {%- if result.rows | length == 0 -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set build = {'load_id': result.rows[0][0] | int, 'as_of_date': result.rows[0][1]} -%}
    {%- if build.as_of_date > as_of_date_text() -%}
        {{ exceptions.raise_compiler_error(
            'as-of date ' ~ as_of_date_text() ~ ' is before the last build\'s ('
            ~ build.as_of_date ~ '): build with --full-refresh'
        ) }}
    {%- endif -%}
    {{ return(build) }}
{% endmacro %}

{#- The load_id of the last build (rows with a larger one are new), or -1 on a full build. -#}
{% macro previous_load_id() -%}
    {%- set build = previous_build() -%}
    {{- build.load_id if build else -1 -}}
{%- endmacro %}

{#- A pre-hook for models that recompute a group of rows at a time (a pair's spans, a user's
    segments): delete the groups listed in `changes`, which the model then appends again
    (a group whose rows all went away loses them too). The model's strategy is `append`:
    dbt's delete+insert would join the whole table on the unique key to delete nothing. -#}
{% macro delete_changed(changes, columns) -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where ({{ columns | join(', ') }}) in (
            select ({{ columns | join(', ') }}) from {{ ref(changes) }}
        )
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}

{#- A pre-hook for plan_user_counts_daily: empty it when every day must be computed again,
    which the model then does (it recomputes every day when it starts empty). That is when
    plan rows were loaded since the last build (tiers, orgs), when an instances row was
    (an instance may have moved: int_access_pairs_changed has a pair changed from the
    beginning; the plan it left may lose its first days, which delete+insert alone would
    keep), or when a plan's org in force at
    A is not the one its days show (a version dated between the two as-of instants moved
    it): every day shows the org in force at A. -#}
{% macro delete_daily_counts_to_recompute() -%}
    {%- set previous = previous_build() if is_incremental() else none -%}
    {%- if previous is none -%}
        select 1
    {%- else -%}
        delete from {{ this }}
        where exists (
            select 1 from {{ ref('base_landing__plans') }}
            where load_id > {{ previous.load_id }}
        )
        or exists (
            select 1 from {{ ref('int_access_pairs_changed') }}
            where changed_from = cast('-infinity' as timestamp)
        )
        or exists (
            select 1
            from {{ this }} as built
            inner join {{ ref('int_plans_as_of') }} as plans on built.plan_id = plans.plan_id
            where built.day = cast('{{ previous.as_of_date }}' as date)
                and built.org_id <> plans.org_id
        )
    {%- endif -%}
{%- endmacro %}

{#- A pre-hook for user_last_seen and counted_users: delete the rows of the users in
    int_users_changed, which the model then computes and appends again; or every row (the
    model then computes them all, as it does whenever it starts empty) when plan rows were
    loaded since the last build, when a plan's org in force at A is not its org at the last
    build's as-of instant (any plan: counted_users.added_to_org_at reads ended access on
    plans nobody is counted in now), or, with `admins`, when org_admins rows were loaded
    (is_org_admin). -#}
{% macro delete_user_rows_to_recompute(admins=false) -%}
    {%- set previous = previous_build() if is_incremental() else none -%}
    {%- if previous is none -%}
        select 1
    {%- else -%}
        delete from {{ this }}
        where user_id in (select changed.user_id from {{ ref('int_users_changed') }} as changed)
        or exists (
            select 1 from {{ ref('base_landing__plans') }}
            where load_id > {{ previous.load_id }}
        )
        or exists (
            select 1
            from {{ ref('int_plan_versions') }} as before
            inner join {{ ref('int_plans_as_of') }} as plans on before.plan_id = plans.plan_id
            where
                before.valid_from <= {{ previous_as_of_instant(previous) }}
                and {{ previous_as_of_instant(previous) }} < before.valid_to
                and before.org_id <> plans.org_id
        )
        {%- if admins %}
        or exists (
            select 1 from {{ ref('base_landing__org_admins') }}
            where load_id > {{ previous.load_id }}
        )
        {%- endif %}
    {%- endif -%}
{%- endmacro %}

{#- The incremental filter of user_last_seen and counted_users: the users to compute again,
    or everyone when the pre-hook emptied the table (or it was empty). -#}
{% macro is_user_to_recompute(user_id) -%}
    ({{ user_id }} in (select changed.user_id from {{ ref('int_users_changed') }} as changed)
    or not exists (select 1 from {{ this }}))
{%- endmacro %}

{#- The as-of instant of the last build (its as-of date + 1 day, 00:00). -#}
{% macro previous_as_of_instant(previous) -%}
    cast(cast('{{ previous.as_of_date }}' as date) + 1 as timestamp)
{%- endmacro %}

{#- The usable last-seen observations before A that the last build did not see: loaded
    since, or uncovered by the later as-of instant. -#}
{% macro last_seen_not_yet_built(previous) -%}
    select
        instance_id,
        user_id,
        last_seen_at
    from {{ ref('base_landing__last_seen') }}
    where
        quarantine_reason is null
        and last_seen_at < {{ as_of_instant() }}
        and (
            load_id > {{ previous.load_id }}
            or last_seen_at >= {{ previous_as_of_instant(previous) }}
        )
{%- endmacro %}

{#- A post-hook for user_last_seen. The latest observation wins, so last-seen observations
    the last build did not see (loaded since, or uncovered by the new as-of instant) can
    only raise last_seen_at: they do so in place, for users not computed again (a nightly
    feed touches most users; rewriting all their rows cost more than the whole table). -#}
{% macro raise_last_seen() -%}
    {%- set previous = previous_build() if is_incremental() else none -%}
    {%- if previous is none -%}
        select 1
    {%- else -%}
        update {{ this }} as built
        set last_seen_at = seen.last_seen_at
        from (
            select
                instance_id,
                user_id,
                max(last_seen_at) as last_seen_at
            from ({{ last_seen_not_yet_built(previous) }}) as unseen
            group by instance_id, user_id
        ) as seen
        where
            built.instance_id = seen.instance_id
            and built.user_id = seen.user_id
            and (built.last_seen_at is null or built.last_seen_at < seen.last_seen_at)
    {%- endif -%}
{%- endmacro %}

{#- A post-hook of the incremental marts with day counts: `days` maps each column to the
    timestamp it counts the days from, up to the as-of date D. They grow by one a day on
    every row, whichever rows the build computed, so every row gets them again. -#}
{% macro update_days_to_as_of(days) -%}
    update {{ this }} set
    {%- for column, since in days.items() %}
        {{ column }} = {{ as_of_date() }} - cast({{ since }} as date){{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- A post-hook for counted_users: a plan's last_seen_at is the latest of its instances' in
    user_last_seen, whose post-hook may have raised some in place (for users with
    observations the last build did not see). -#}
{% macro raise_plan_last_seen() -%}
    {%- set previous = previous_build() if is_incremental() else none -%}
    {%- if previous is none -%}
        select 1
    {%- else -%}
        update {{ this }} as built
        set last_seen_at = seen.last_seen_at
        from (
            select
                plan_id,
                user_id,
                max(last_seen_at) as last_seen_at
            from {{ ref('user_last_seen') }}
            where user_id in (
                select unseen.user_id from ({{ last_seen_not_yet_built(previous) }}) as unseen
            )
            group by plan_id, user_id
        ) as seen
        where
            built.plan_id = seen.plan_id
            and built.user_id = seen.user_id
            and built.last_seen_at is distinct from seen.last_seen_at
    {%- endif -%}
{%- endmacro %}

{#- A post-hook for counted_users: observations the last build did not see, on an instance
    of the plan the user has had access to, raise inactive_since in place (it is the latest
    such sighting, or access_since when that is later). -#}
{% macro raise_inactive_since() -%}
    {%- set previous = previous_build() if is_incremental() else none -%}
    {%- if previous is none -%}
        select 1
    {%- else -%}
        update {{ this }} as built
        set inactive_since = seen.seen_at
        from (
            select
                instances.plan_id,
                unseen.user_id,
                max(unseen.last_seen_at) as seen_at
            from ({{ last_seen_not_yet_built(previous) }}) as unseen
            inner join {{ ref('stg_landing__instances') }} as instances
                on unseen.instance_id = instances.instance_id
            where exists (
                select 1 from {{ ref('int_access_state_intervals') }} as spans
                where spans.instance_id = unseen.instance_id and spans.user_id = unseen.user_id
            )
            group by instances.plan_id, unseen.user_id
        ) as seen
        where
            built.plan_id = seen.plan_id
            and built.user_id = seen.user_id
            and built.inactive_since < seen.seen_at
    {%- endif -%}
{%- endmacro %}
