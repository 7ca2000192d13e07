{#- One top-level key of a JSON text column, as text; dialects differ, so dispatch. -#}
{% macro json_text_field(column, key) -%}
    {{ return(adapter.dispatch('json_text_field')(column, key)) }}
{%- endmacro %}

{% macro default__json_text_field(column, key) -%}
    ({{ column }}::json ->> '{{ key }}')
{%- endmacro %}

{% macro duckdb__json_text_field(column, key) -%}
    json_extract_string({{ column }}, '$.{{ key }}')
{%- endmacro %}
