{#- A value the run passes to the models: the dbt var `var_name` when given (`--vars`, a
    unit-test override), else the environment variable `env_name` (read only while models
    run: a changed `--vars` or a changed env var read at parse time makes dbt re-parse the
    whole project, seconds every night), else `default`. It must match `pattern`. -#}
{% macro run_value(var_name, env_name, default, pattern, what) -%}
    {%- set value = var(var_name, none) -%}
    {%- if value is none -%}
        {%- set value = env_var(env_name, default) if execute else default -%}
    {%- endif -%}
    {%- if not modules.re.fullmatch(pattern, value | string) -%}
        {{ exceptions.raise_compiler_error(what ~ ': ' ~ value) }}
    {%- endif -%}
    {{- return(value | string) -}}
{%- endmacro %}
