{#- Parsing landing text. Each returns null when the text does not parse, so the base models
    can name the reason and the row can be quarantined instead of failing the build. -#}

{#- An instant as a naive UTC timestamp: an offset is converted, no offset means UTC. -#}
{% macro parse_timestamp(column) -%}
    {{ return(adapter.dispatch('parse_timestamp', 'usercounts')(column)) }}
{%- endmacro %}

{% macro default__parse_timestamp(column) -%}
    cast(try_cast(nullif(trim({{ column }}), '') as timestamp with time zone) as timestamp)
{%- endmacro %}

{#- Text without an offset (or with Z) is UTC already and takes the plain timestamp cast,
    several times faster than the time-zone-aware one, which reads every other form. -#}
{% macro duckdb__parse_timestamp(column) -%}
    case
        when regexp_full_match(
            trim({{ column }}),
            '[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?Z?)?'
        )
            then try_cast(trim({{ column }}) as timestamp)
        else timezone('UTC', try_cast(nullif(trim({{ column }}), '') as timestamptz))
    end
{%- endmacro %}

{% macro parse_date(column) -%}
    try_cast(nullif(trim({{ column }}), '') as date)
{%- endmacro %}

{#- Whole numbers only, written in digits (a trailing .0 allowed, as a Parquet double reads):
    DuckDB's cast alone rounds 10.5 to 11 and reads 1e3, 0x10 and 1_000. -#}
{% macro parse_integer(column) -%}
    case
        when regexp_full_match({{ column }}, '\s*[+-]?[0-9]+([.]0*)?\s*')
            then try_cast(trim({{ column }}) as bigint)
    end
{%- endmacro %}

{% macro parse_boolean(column) -%}
    case
        when lower(trim({{ column }})) in ('true', 't', '1', 'yes', 'y') then true
        when lower(trim({{ column }})) in ('false', 'f', '0', 'no', 'n') then false
    end
{%- endmacro %}

{% macro is_blank(column) -%}
    nullif(trim({{ column }}), '') is null
{%- endmacro %}

{#- The first failing check of a row, as text, or null when the row is good.
    checks: list of (condition, reason) pairs, in the order they are reported.
    It fails closed, so that a check put before the blank check of its column still
    quarantines the row: a condition that is null counts as failed, and a reason that is null
    (text || a null column) falls back to the condition's own text. -#}
{% macro first_failed_check(checks) -%}
    case
        {%- for condition, reason in checks %}
        when ({{ condition }}) is not false
            then coalesce({{ reason }}, 'failed check: {{ condition | replace("'", "''") }}')
        {%- endfor %}
    end
{%- endmacro %}
