-- One row per consent event of a person on a linked list: consent `given` or `withdrawn`,
-- when, in which system (crm, the ESP account, mailbridge), through which channel, by whom,
-- and the raw row that shows it. GDPR Art. 7(1) asks that consent be provable; the event log
-- warns (`consent_unproven`) for every membership subscribed at the ESP that no `given` event
-- with a time and a channel accounts for.
--
-- The events:
-- - crm: each CRM assignment's status now (the CRM keeps no history of its own), given when
--   subscribed, withdrawn when unsubscribed, by `status_set_by` (web form, phone, import, a
--   CRM user, or mailbridge writing what it carried over);
-- - the ESP: each status the membership history (snp_esp__membership_history) saw it take:
--   given at the opt-in (a double opt-in when the ESP dates the sign-up before the
--   confirmation, with the confirmation time and the IP), withdrawn at the status time; an
--   unsubscribe through a campaign's link is its own event, with the campaign;
-- - mailbridge: every confirmed push that subscribed or unsubscribed, with who decided it.
with

links as (

    select list_link_id, crm_list_id, esp_account, esp_list_id from {{ ref('stg_mailbridge__list_links') }}

),

contacts as (

    select crm_contact_id, email_key from {{ ref('stg_crm__contacts') }}

),

assignments as (

    select * from {{ ref('stg_crm__assignments') }}

),

history as (

    select
        *,
        lag(status) over (partition by esp_account, esp_list_id, email_key order by dbt_valid_from) as previous_status

    from {{ ref('snp_esp__membership_history') }}
    where lower(cast(dbt_is_deleted as {{ dbt.type_string() }})) <> 'true'

),

campaign_unsubscribes as (

    select * from {{ ref('int_esp__email_events') }}
    where event_type = 'unsubscribe'

),

outbox as (

    select * from {{ source('ops', 'pushback_outbox') }}
    where status = 'confirmed'

),

decisions as (

    select * from {{ source('ops', 'decisions') }}

),

crm_events as (

    select
        links.list_link_id,
        contacts.email_key,
        assignments.crm_contact_id,
        case assignments.status when 'subscribed' then 'given' else 'withdrawn' end as consent,
        assignments.status_changed_at as event_at,
        'crm' as system,
        case
            when lower(assignments.status_set_by) like 'web%' then 'web_form'
            when lower(assignments.status_set_by) like 'telefon%' or lower(assignments.status_set_by) like 'phone%'
                then 'phone'
            when lower(assignments.status_set_by) like '%import%' then 'import'
            when lower(assignments.status_set_by) like 'mailbridge%' then 'mailbridge'
            when assignments.status_set_by is not null then 'crm_user'
        end as channel,
        assignments.status_set_by as actor,
        cast(null as {{ dbt.type_string() }}) as ip,
        cast(null as {{ dbt.type_timestamp() }}) as doi_confirmed_at,
        concat('raw_crm.assignments: contact ', assignments.crm_contact_id, ', list ', assignments.crm_list_id)
            as evidence_source

    from assignments
    inner join links on assignments.crm_list_id = links.crm_list_id
    left join contacts on assignments.crm_contact_id = contacts.crm_contact_id
    where assignments.status in ('subscribed', 'unsubscribed')

),

esp_events as (

    select
        links.list_link_id,
        history.email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        case history.status when 'subscribed' then 'given' else 'withdrawn' end as consent,
        case
            when history.status = 'subscribed' then coalesce(history.opted_in_at, history.status_changed_at)
            else history.status_changed_at
        end as event_at,
        history.esp_account as system,
        case
            when history.status = 'unsubscribed' then 'esp_unsubscribe'
            when history.signed_up_at is not null and history.opted_in_at > history.signed_up_at then 'double_opt_in'
            else 'esp_opt_in'
        end as channel,
        'esp' as actor,
        case when history.status = 'subscribed' then history.opt_in_ip end as ip,
        case
            when history.status = 'subscribed' and history.signed_up_at is not null
                and history.opted_in_at > history.signed_up_at then history.opted_in_at
        end as doi_confirmed_at,
        concat('history.snp_esp__membership_history: ', history.esp_account, '/', history.esp_list_id, '/',
               history.email_key, ' as of ', cast(history.dbt_valid_from as {{ dbt.type_string() }})) as evidence_source

    from history
    inner join links
        on history.esp_account = links.esp_account
        and history.esp_list_id = links.esp_list_id
    where history.status in ('subscribed', 'unsubscribed')
        and (history.previous_status is null or history.previous_status <> history.status)
        -- an unsubscribe through a campaign's link is the campaign's event (below)
        and not (
            history.status = 'unsubscribed'
            and exists (
                select 1 from campaign_unsubscribes
                where campaign_unsubscribes.esp_account = history.esp_account
                    and campaign_unsubscribes.esp_list_id = history.esp_list_id
                    and campaign_unsubscribes.email_key = history.email_key
                    and campaign_unsubscribes.occurred_at <= coalesce(history.status_changed_at, history.dbt_valid_from)
            )
        )

),

campaign_events as (

    select
        links.list_link_id,
        campaign_unsubscribes.email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        'withdrawn' as consent,
        campaign_unsubscribes.occurred_at as event_at,
        campaign_unsubscribes.esp_account as system,
        'campaign_unsubscribe_link' as channel,
        'esp' as actor,
        cast(null as {{ dbt.type_string() }}) as ip,
        cast(null as {{ dbt.type_timestamp() }}) as doi_confirmed_at,
        concat('unsubscribe report of campaign ', campaign_unsubscribes.campaign_id, ' (', campaign_unsubscribes.esp_account,
               ')') as evidence_source

    from campaign_unsubscribes
    inner join links
        on campaign_unsubscribes.esp_account = links.esp_account
        and campaign_unsubscribes.esp_list_id = links.esp_list_id

),

mailbridge_events as (

    select
        outbox.list_link_id,
        outbox.email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        case when outbox.action = 'unsubscribe' then 'withdrawn' else 'given' end as consent,
        outbox.updated_at as event_at,
        'mailbridge' as system,
        concat('push_', outbox.action, '_', outbox.target) as channel,
        coalesce(
            (
                select max(decisions.decided_by) from decisions
                where decisions.list_link_id = outbox.list_link_id
                    and decisions.email_key = outbox.email_key
                    and decisions.action = outbox.action
                    and decisions.decided_at <= outbox.attempted_at
            ),
            'mailbridge policy'
        ) as actor,
        cast(null as {{ dbt.type_string() }}) as ip,
        cast(null as {{ dbt.type_timestamp() }}) as doi_confirmed_at,
        concat('ops.pushback_outbox: attempt ', outbox.attempt_id, ' (run ', outbox.run_id, ')') as evidence_source

    from outbox
    where outbox.action in ('transmit', 'unsubscribe')
        -- mailbridge retiring a former address is not the person's opt-out
        and outbox.retired_email_key is null

),

-- one event once: two CRM rows of one contact and list that say the same (a duplicate
-- assignment row) are one consent event
unioned as (

    select * from crm_events
    union
    select * from esp_events
    union
    select * from campaign_events
    union
    select * from mailbridge_events

),

final as (

    select
        {{ dbt.hash("concat_ws('|', list_link_id, coalesce(email_key, ''), coalesce(crm_contact_id, ''), consent, system, coalesce(channel, ''), coalesce(cast(event_at as " ~ dbt.type_string() ~ "), ''), evidence_source)") }}
            as consent_event_id,
        list_link_id,
        email_key,
        crm_contact_id,
        consent,
        event_at,
        system,
        channel,
        actor,
        ip,
        doi_confirmed_at,
        evidence_source

    from unioned

)

select * from final
