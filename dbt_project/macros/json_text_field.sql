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

{#- The same, with the key an expression (a column holding the key name). -#}
{% macro json_text_field_at(column, key_expression) -%}
    {{ return(adapter.dispatch('json_text_field_at')(column, key_expression)) }}
{%- endmacro %}

{% macro default__json_text_field_at(column, key_expression) -%}
    ({{ column }}::json ->> ({{ key_expression }}))
{%- endmacro %}

{% macro duckdb__json_text_field_at(column, key_expression) -%}
    json_extract_string({{ column }}, concat('$."', {{ key_expression }}, '"'))
{%- endmacro %}
