-- The CRM side of every list link: one row per link and valid email key. When several CRM
-- contacts share a key, the duplicate rule picks one (macro pick_duplicate_contact).
with

links as (

    select * from {{ ref('stg_mailbridge__list_links') }}

),

memberships as (

    select * from {{ ref('int_crm__memberships') }}
    where email_key is not null

),

esp_names as (

    select
        links.list_link_id,
        esp.email_key,
        esp.first_name,
        esp.last_name

    from links
    inner join {{ ref('int_esp__memberships') }} as esp
        on links.esp_account = esp.esp_account
        and links.esp_list_id = esp.esp_list_id

),

candidates as (

    select
        links.list_link_id,
        memberships.*,
        coalesce(
            esp_names.email_key is not null
            and lower(coalesce(memberships.first_name, '')) = lower(coalesce(esp_names.first_name, ''))
            and lower(coalesce(memberships.last_name, '')) = lower(coalesce(esp_names.last_name, '')),
            false
        ) as matches_esp_name

    from links
    inner join memberships on links.crm_list_id = memberships.crm_list_id
    left join esp_names
        on links.list_link_id = esp_names.list_link_id
        and memberships.email_key = esp_names.email_key

),

picked as (

    {{ pick_duplicate_contact('candidates', ['list_link_id', 'email_key']) }}

),

final as (

    select
        list_link_id,
        crm_list_id,
        crm_contact_id,
        email_address,
        email_key,
        status,
        crm_status_value,
        status_changed_at,
        status_set_by,
        crm_task,
        first_name,
        last_name,
        salutation,
        custom_fields,
        contacts_with_key,
        duplicate_note

    from picked

)

select * from final
