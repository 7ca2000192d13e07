{#- Union the models named in a project var: how every ESP reaches one canonical model
    without an ESP name in the intermediate layer. -#}
{% macro union_models(var_name, columns) -%}
    {%- for model_name in var(var_name) %}
    select {{ columns | join(', ') }} from {{ ref(model_name) }}
    {%- if not loop.last %}
    union all
    {%- endif -%}
    {%- endfor %}
{%- endmacro %}
