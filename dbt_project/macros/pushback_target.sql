{#- Which side a push-back action writes: esp or crm. -#}
{% macro pushback_target(action) -%}
    case
        when {{ action }} in ('transmit', 'start_doi', 'unsubscribe', 'update_fields', 'delete', 'delete_permanent',
                              'change_address_doi', 'change_address_transmit') then 'esp'
        else 'crm'
    end
{%- endmacro %}
