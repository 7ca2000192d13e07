-- What the reconciliation compares: for every list link, the CRM row and the ESP row of one
-- email key side by side; a changed address as one pair of its two keys; an invalid CRM
-- address as one row per contact; ESP members at a CRM contact's former address flagged.
with

crm_side as (

    select * from {{ ref('int_reconciliation__crm_side') }}

),

esp_side as (

    select * from {{ ref('int_reconciliation__esp_side') }}

),

changes as (

    select * from {{ ref('int_reconciliation__email_changes') }}

),

{#- (column of the side model, column of this model) -#}
{%- set crm_columns = [
    ('crm_contact_id', 'crm_contact_id'), ('email_address', 'crm_email_address'), ('status', 'crm_status'),
    ('status_changed_at', 'crm_status_changed_at'), ('status_set_by', 'crm_status_set_by'),
    ('crm_task', 'crm_task'), ('first_name', 'crm_first_name'), ('last_name', 'crm_last_name'),
    ('salutation', 'crm_salutation'), ('custom_fields', 'crm_custom_fields'),
    ('consent_contact_id', 'crm_consent_contact_id'), ('task_contact_id', 'crm_task_contact_id'),
] %}
{%- set esp_columns = [
    ('esp_member_id', 'esp_member_id'), ('esp_contact_id', 'esp_contact_id'),
    ('email_address', 'esp_email_address'), ('status', 'esp_status'), ('esp_status', 'esp_native_status'),
    ('status_changed_at', 'esp_status_changed_at'), ('status_time_precision', 'esp_status_time_precision'),
    ('first_name', 'esp_first_name'),
    ('last_name', 'esp_last_name'), ('salutation', 'esp_salutation'), ('custom_fields', 'esp_custom_fields'),
    ('records_with_key', 'esp_records_with_key'),
] %}

matched_by_key as (

    select
        coalesce(crm_side.list_link_id, esp_side.list_link_id) as list_link_id,
        coalesce(crm_side.email_key, esp_side.email_key) as email_key,
        cast(null as {{ dbt.type_string() }}) as former_email_key,
        cast(null as {{ dbt.type_string() }}) as changed_in,
        crm_side.duplicate_note,
        esp_side.email_error,
        {%- for column, alias in crm_columns %}
        crm_side.{{ column }} as {{ alias }},
        {%- endfor %}
        {%- for column, alias in esp_columns %}
        esp_side.{{ column }} as {{ alias }},
        {%- endfor %}
        crm_side.list_link_id is not null as in_crm,
        esp_side.list_link_id is not null as in_esp

    from crm_side
    full outer join esp_side
        on crm_side.list_link_id = esp_side.list_link_id
        and crm_side.email_key = esp_side.email_key
    left join changes as crm_change
        on crm_side.list_link_id = crm_change.list_link_id
        and crm_side.email_key = crm_change.crm_email_key
    left join changes as esp_change
        on esp_side.list_link_id = esp_change.list_link_id
        and esp_side.email_key = esp_change.esp_email_key
    -- the two halves of a changed address are paired below instead
    where crm_change.list_link_id is null and esp_change.list_link_id is null

),

matched_by_change as (

    select
        changes.list_link_id,
        case changes.changed_in when 'crm' then changes.crm_email_key else changes.esp_email_key end as email_key,
        case changes.changed_in when 'crm' then changes.esp_email_key else changes.crm_email_key end
            as former_email_key,
        changes.changed_in,
        crm_side.duplicate_note,
        cast(null as {{ dbt.type_string() }}) as email_error,
        {%- for column, alias in crm_columns %}
        crm_side.{{ column }} as {{ alias }},
        {%- endfor %}
        {%- for column, alias in esp_columns %}
        esp_side.{{ column }} as {{ alias }},
        {%- endfor %}
        true as in_crm,
        true as in_esp

    from changes
    inner join crm_side
        on changes.list_link_id = crm_side.list_link_id
        and changes.crm_email_key = crm_side.email_key
    inner join esp_side
        on changes.list_link_id = esp_side.list_link_id
        and changes.esp_email_key = esp_side.email_key

),

invalid_in_crm as (

    select
        links.list_link_id,
        cast(null as {{ dbt.type_string() }}) as email_key,
        cast(null as {{ dbt.type_string() }}) as former_email_key,
        cast(null as {{ dbt.type_string() }}) as changed_in,
        cast(null as {{ dbt.type_string() }}) as duplicate_note,
        memberships.email_error,
        {%- for column, alias in crm_columns %}
        memberships.{{ 'crm_contact_id' if column in ('consent_contact_id', 'task_contact_id') else column }} as {{ alias }},
        {%- endfor %}
        {%- for column, alias in esp_columns %}
        null as {{ alias }},
        {%- endfor %}
        true as in_crm,
        false as in_esp

    from {{ ref('stg_mailbridge__list_links') }} as links
    inner join {{ ref('int_crm__memberships') }} as memberships on links.crm_list_id = memberships.crm_list_id
    where memberships.email_key is null

),

unioned as (

    select * from matched_by_key
    union all
    select * from matched_by_change
    union all
    select * from invalid_in_crm

),

former_addresses as (

    select former_email_key, max(changed_at) as changed_at
    from {{ ref('int_crm__address_history') }}
    group by former_email_key

),

-- an ESP member no CRM contact has now, at an address a CRM contact used to have: the old
-- half of a changed address, never a new contact
final as (

    select
        unioned.*,
        former_addresses.former_email_key is not null as is_former_address,
        former_addresses.changed_at as former_address_changed_at

    from unioned
    left join former_addresses
        on unioned.email_key = former_addresses.former_email_key
        and not unioned.in_crm

)

select * from final
