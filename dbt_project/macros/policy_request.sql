{#- One row of the queue's requests that comes from the policy: `action` (a column of the
    reconciliation) at `precedence`, with no decision behind it; `crm_target_status`, the status
    the CRM is to take when it is not the ESP's. -#}
{% macro policy_request(action, precedence, crm_target_status="null") -%}
    select
        reconciliation_id, {{ action }} as action, 'policy' as action_source,
        cast(null as {{ dbt.type_string() }}) as decision_id, cast(null as {{ dbt.type_string() }}) as decided_by,
        cast(null as {{ dbt.type_timestamp() }}) as decided_at, cast(null as {{ dbt.type_string() }}) as decision_note,
        cast(null as {{ dbt.type_string() }}) as decided_on_fingerprint,
        cast({{ crm_target_status }} as {{ dbt.type_string() }}) as crm_target_status,
        cast(null as {{ dbt.type_string() }}) as parent_action,
        {{ precedence }} as precedence
{%- endmacro %}
