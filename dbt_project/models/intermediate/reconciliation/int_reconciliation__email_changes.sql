-- Address changes that would otherwise show as a new_contact plus a not_in_esp: one row per
-- list link and person, with the CRM's and the ESP's key. Two directions:
--   changed in the CRM: the contact's former address is the ESP member, its new one unknown there;
--   changed at the ESP: the ESP contact's former address is the CRM's, its new one unknown in the CRM.
with

crm_side as (

    select * from {{ ref('int_reconciliation__crm_side') }}

),

esp_side as (

    select * from {{ ref('int_reconciliation__esp_side') }}
    where email_key is not null

),

crm_history as (

    select * from {{ ref('int_crm__address_history') }}

),

esp_history as (

    select * from {{ ref('int_esp__member_addresses') }}

),

changed_in_crm as (

    select
        crm_side.list_link_id,
        crm_side.crm_contact_id,
        crm_side.email_key as crm_email_key,
        esp_side.email_key as esp_email_key,
        esp_side.esp_member_id,
        'crm' as changed_in,
        crm_history.changed_at

    from crm_side
    inner join crm_history on crm_side.crm_contact_id = crm_history.crm_contact_id
    inner join esp_side
        on crm_side.list_link_id = esp_side.list_link_id
        and crm_history.former_email_key = esp_side.email_key
    -- the new address is not at the ESP yet
    left join esp_side as new_at_esp
        on crm_side.list_link_id = new_at_esp.list_link_id
        and crm_side.email_key = new_at_esp.email_key
    -- and no other CRM member of the list holds the old one
    left join crm_side as old_in_crm
        on crm_side.list_link_id = old_in_crm.list_link_id
        and crm_history.former_email_key = old_in_crm.email_key
    where new_at_esp.email_key is null
        and old_in_crm.email_key is null

),

changed_at_esp as (

    select
        esp_side.list_link_id,
        crm_side.crm_contact_id,
        crm_side.email_key as crm_email_key,
        esp_side.email_key as esp_email_key,
        esp_side.esp_member_id,
        'esp' as changed_in,
        esp_history.last_seen_at as changed_at

    from esp_side
    inner join esp_history
        on esp_side.esp_account = esp_history.esp_account
        and esp_side.esp_list_id = esp_history.esp_list_id
        and esp_side.esp_contact_id = esp_history.esp_contact_id
        and esp_side.email_key <> esp_history.email_key
    inner join crm_side
        on esp_side.list_link_id = crm_side.list_link_id
        and esp_history.email_key = crm_side.email_key
    -- the new address is not in the CRM list yet
    left join crm_side as new_in_crm
        on esp_side.list_link_id = new_in_crm.list_link_id
        and esp_side.email_key = new_in_crm.email_key
    -- and the old one is no longer at the ESP
    left join esp_side as old_at_esp
        on esp_side.list_link_id = old_at_esp.list_link_id
        and esp_history.email_key = old_at_esp.email_key
    where new_in_crm.email_key is null
        and old_at_esp.email_key is null

),

unioned as (

    select * from changed_in_crm
    union all
    select * from changed_at_esp

),

ranked as (

    select
        *,
        row_number() over (
            partition by list_link_id, crm_contact_id order by changed_at desc nulls last, esp_member_id
        ) as contact_rank,
        row_number() over (
            partition by list_link_id, esp_member_id order by changed_at desc nulls last, crm_contact_id
        ) as member_rank

    from unioned

),

final as (

    select
        list_link_id,
        crm_contact_id,
        crm_email_key,
        esp_email_key,
        esp_member_id,
        changed_in,
        changed_at

    from ranked
    where contact_rank = 1 and member_rank = 1

)

select * from final
