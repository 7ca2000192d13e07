-- Former addresses of CRM contacts: from the CRM's own change log where it has one, and from
-- what mailbridge saw change between syncs. One row per contact and former email key.
with

current_contacts as (

    select crm_contact_id, email_key from {{ ref('stg_crm__contacts') }}

),

crm_log as (

    select crm_contact_id, email_key, valid_to as changed_at, 'crm_change_log' as history_source
    from {{ ref('stg_crm__email_history') }}
    where email_key is not null

),

seen_by_sync as (

    select crm_contact_id, email_key, valid_to as changed_at, 'sync_snapshots' as history_source
    from {{ ref('stg_crm__contact_versions') }}
    where valid_to is not null and email_key is not null

),

unioned as (

    select * from crm_log
    union all
    select * from seen_by_sync

),

former as (

    select
        unioned.crm_contact_id,
        unioned.email_key as former_email_key,
        unioned.changed_at,
        unioned.history_source,
        row_number() over (
            partition by unioned.crm_contact_id, unioned.email_key
            order by unioned.changed_at desc nulls last
        ) as recency

    from unioned
    inner join current_contacts on unioned.crm_contact_id = current_contacts.crm_contact_id
    where unioned.email_key <> coalesce(current_contacts.email_key, '')

),

final as (

    select
        crm_contact_id,
        former_email_key,
        changed_at,
        history_source

    from former
    where recency = 1

)

select * from final
