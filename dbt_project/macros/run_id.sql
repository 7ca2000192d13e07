{#- The run that builds the marts, quoted for SQL. Mailbridge passes it in MAILBRIDGE_RUN_ID:
    a var that changes every run would make dbt parse the whole project again each time, while
    a changed environment variable re-parses only the few files that read it. A `run_id` var
    other than the default (a unit test's override, `--vars` by hand) wins. -#}
{% macro run_id() -%}
    {%- set value = var('run_id') if var('run_id') != 'manual' else env_var('MAILBRIDGE_RUN_ID', 'manual') -%}
    '{{ value | replace("'", "''") }}'
{%- endmacro %}
