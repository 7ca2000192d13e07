-- ESP members of a linked list that no CRM member of the list holds, with the CRM contact
-- the address belongs to: one row per list link and email key. Several contacts with the
-- key are settled by the same duplicate rule as the list's own members.
with

esp_side as (

    select * from {{ ref('int_reconciliation__esp_side') }}
    where email_key is not null

),

crm_side as (

    select * from {{ ref('int_reconciliation__crm_side') }}

),

contacts as (

    select * from {{ ref('stg_crm__contacts') }}
    where email_key is not null

),

candidates as (

    select
        esp_side.list_link_id,
        esp_side.email_key,
        contacts.crm_contact_id,
        lower(coalesce(contacts.first_name, '')) = lower(coalesce(esp_side.first_name, ''))
            and lower(coalesce(contacts.last_name, '')) = lower(coalesce(esp_side.last_name, ''))
            as matches_esp_name

    from esp_side
    inner join contacts on esp_side.email_key = contacts.email_key
    left join crm_side
        on esp_side.list_link_id = crm_side.list_link_id
        and esp_side.email_key = crm_side.email_key
    where crm_side.list_link_id is null

),

picked as (

    {{ pick_duplicate_contact('candidates', ['list_link_id', 'email_key']) }}

),

final as (

    select
        list_link_id,
        email_key,
        crm_contact_id,
        contacts_with_key,
        duplicate_note

    from picked

)

select * from final
