{#- The moment the reconciliation judges time against: var `as_of` when given, else now. -#}
{% macro reconcile_as_of() -%}
    {%- if var('as_of', '') -%}
        cast('{{ var("as_of") }}' as {{ dbt.type_timestamp() }})
    {%- else -%}
        {{ dbt.current_timestamp() }}
    {%- endif -%}
{%- endmacro %}
