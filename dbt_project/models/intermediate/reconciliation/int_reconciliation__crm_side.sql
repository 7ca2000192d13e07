-- The CRM side of every list link: one row per link and valid email key. When several CRM
-- contacts share a key, first and last name (against the ESP's) pick one; otherwise the
-- lowest contact id is taken and a warning says so.
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

ranked as (

    select
        *,
        count(*) over (partition by list_link_id, email_key) as contacts_with_key,
        sum(case when matches_esp_name then 1 else 0 end) over (partition by list_link_id, email_key)
            as contacts_matching_name,
        row_number() over (
            partition by list_link_id, email_key
            order by case when matches_esp_name then 0 else 1 end, length(crm_contact_id), crm_contact_id
        ) as key_rank

    from candidates

),

duplicate_ids as (

    select
        list_link_id,
        email_key,
        {{ dbt.listagg('crm_contact_id', "', '", "order by length(crm_contact_id), crm_contact_id") }} as contact_ids

    from ranked
    where contacts_with_key > 1
    group by list_link_id, email_key

),

final as (

    select
        ranked.list_link_id,
        ranked.crm_list_id,
        ranked.crm_contact_id,
        ranked.email_address,
        ranked.email_key,
        ranked.status,
        ranked.crm_status_value,
        ranked.status_changed_at,
        ranked.status_set_by,
        ranked.crm_task,
        ranked.first_name,
        ranked.last_name,
        ranked.salutation,
        ranked.custom_fields,
        ranked.contacts_with_key,
        case
            when ranked.contacts_with_key = 1 then null
            when ranked.contacts_matching_name = 1 then concat(
                'duplicate_contacts_by_name: contacts ', duplicate_ids.contact_ids,
                ' share this address; the name matches contact ', ranked.crm_contact_id
            )
            else concat(
                'duplicate_contacts_undecided: contacts ', duplicate_ids.contact_ids,
                ' share this address and the names do not pick one; the lowest id, ',
                ranked.crm_contact_id, ', is taken'
            )
        end as duplicate_note

    from ranked
    left join duplicate_ids
        on ranked.list_link_id = duplicate_ids.list_link_id
        and ranked.email_key = duplicate_ids.email_key
    where ranked.key_rank = 1

)

select * from final
