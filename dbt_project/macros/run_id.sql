{#- The run that builds the marts, quoted for SQL. Mailbridge passes it in MAILBRIDGE_RUN_ID:
    a var that changes every run would make dbt parse the whole project again each time. The
    variable is read only when dbt executes, never while it parses: dbt re-parses every file
    that read a changed environment variable, and writes its manifest again. A `run_id` var
    other than the default (a unit test's override, `--vars` by hand) wins. -#}
{% macro run_id() -%}
    {%- set value = var('run_id') if var('run_id') != 'manual' else (env_var('MAILBRIDGE_RUN_ID', 'manual') if execute else 'manual') -%}
    '{{ value | replace("'", "''") }}'
{%- endmacro %}
