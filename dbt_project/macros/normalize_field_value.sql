{#- A mapped field's value as comparable text: the same value typed differently compares equal. -#}
{% macro normalize_field_value(value, field_type) -%}
    case {{ field_type }}
        when 'integer' then cast({{ cast_or_null(value, 'bigint') }} as {{ dbt.type_string() }})
        when 'decimal' then cast({{ cast_or_null(value, 'decimal(38, 10)') }} as {{ dbt.type_string() }})
        when 'boolean' then
            case
                when lower(trim({{ value }})) in ('true', 't', '1', 'yes', 'y', 'ja') then 'true'
                when lower(trim({{ value }})) in ('false', 'f', '0', 'no', 'n', 'nein') then 'false'
                else nullif(lower(trim({{ value }})), '')
            end
        when 'datetime' then cast({{ cast_or_null(value, dbt.type_timestamp()) }} as {{ dbt.type_string() }})
        else nullif(trim({{ value }}), '')
    end
{%- endmacro %}

{% macro cast_or_null(value, data_type) -%}
    {{ return(adapter.dispatch('cast_or_null')(value, data_type)) }}
{%- endmacro %}

{% macro default__cast_or_null(value, data_type) -%}
    cast(nullif(trim({{ value }}), '') as {{ data_type }})
{%- endmacro %}

{% macro duckdb__cast_or_null(value, data_type) -%}
    try_cast(nullif(trim({{ value }}), '') as {{ data_type }})
{%- endmacro %}
