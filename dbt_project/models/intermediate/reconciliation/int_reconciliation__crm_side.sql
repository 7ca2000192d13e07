-- The CRM side of every list link: one row per link and valid email key. When several CRM
-- contacts share a key, the duplicate rule picks the one it is (macro pick_duplicate_contact),
-- the latest status among them is its consent, and a task word of any of them asking for an
-- unsubscribe is its task.
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

-- a task word asking for an unsubscribe on any contact with the address is the person's
-- (an opt-out anywhere reaches everywhere); the picked contact's own word comes first
unsubscribe_tasks as (

    select
        candidates.list_link_id,
        candidates.email_key,
        candidates.crm_contact_id,
        candidates.crm_task,
        row_number() over (
            partition by candidates.list_link_id, candidates.email_key
            order by
                case when candidates.crm_contact_id = picked.crm_contact_id then 0 else 1 end,
                length(candidates.crm_contact_id),
                candidates.crm_contact_id
        ) as task_rank

    from candidates
    inner join {{ source('mailbridge', 'crm_task_values') }} as task_values
        on candidates.crm_task = task_values.crm_value
    inner join picked
        on candidates.list_link_id = picked.list_link_id
        and candidates.email_key = picked.email_key
    where task_values.action = 'unsubscribe'

),

-- the duplicate rule picks who the address is; its consent is the latest status change of
-- any contact with it on the list (an opt-out anywhere reaches everywhere): an opt-out with
-- no time, then the newest change, and on equal times the opt-out wins
consent as (

    select
        *,
        row_number() over (
            partition by list_link_id, email_key
            order by
                case when is_opt_out and status_changed_at is null then 0 else 1 end,
                status_changed_at desc nulls last,
                case when is_opt_out then 0 else 1 end,
                length(crm_contact_id),
                crm_contact_id
        ) as consent_rank

    from (
        select *, status not in ('subscribed', 'bounced_soft', 'pending') as is_opt_out
        from candidates
    ) as statuses

),

final as (

    select
        picked.list_link_id,
        picked.crm_list_id,
        picked.crm_contact_id,
        picked.email_address,
        picked.email_key,
        consent.status,
        consent.crm_status_value,
        consent.status_changed_at,
        consent.status_set_by,
        coalesce(unsubscribe_tasks.crm_task, picked.crm_task) as crm_task,
        -- whose task column the word is in: the push clears it there
        coalesce(unsubscribe_tasks.crm_contact_id, picked.crm_contact_id) as task_contact_id,
        picked.first_name,
        picked.last_name,
        picked.salutation,
        picked.custom_fields,
        picked.contacts_with_key,
        case
            when consent.status <> picked.status then concat_ws('; ',
                picked.duplicate_note,
                concat(
                    'duplicate_contacts_consent: the status of contact ', consent.crm_contact_id, ' (',
                    consent.status, ') is the latest of the contacts with this address and speaks for its consent'
                )
            )
            else picked.duplicate_note
        end as duplicate_note,
        consent.crm_contact_id as consent_contact_id

    from picked
    inner join consent
        on picked.list_link_id = consent.list_link_id
        and picked.email_key = consent.email_key
        and consent.consent_rank = 1
    left join unsubscribe_tasks
        on picked.list_link_id = unsubscribe_tasks.list_link_id
        and picked.email_key = unsubscribe_tasks.email_key
        and unsubscribe_tasks.task_rank = 1

)

select * from final
