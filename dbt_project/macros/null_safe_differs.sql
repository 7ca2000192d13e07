{#- True when two nullable values differ, treating null and '' as the same. -#}
{% macro null_safe_differs(left, right) -%}
    coalesce({{ left }}, '') <> coalesce({{ right }}, '')
{%- endmacro %}
