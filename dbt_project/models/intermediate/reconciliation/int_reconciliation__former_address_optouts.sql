-- The latest opt-out at an address a CRM contact has left that still speaks for them: one row
-- per list link and contact, and, for an ESP member that moved on from the address and has no
-- CRM contact on the list (yet), one per list link and its address now. The reconciliation
-- weighs it against the status at the address now (a status time that cannot order the
-- opt-out before the subscribe there lets the opt-out win).
with

links as (

    select * from {{ ref('stg_mailbridge__list_links') }}

),

-- mailbridge's attempts that may have reached the ESP: all but those it refused or skipped (a
-- push killed before it heard back leaves a failed attempt whose write took effect)
attempts as (

    select * from {{ source('ops', 'pushback_outbox') }}
    where status not in ('rejected', 'stale')

),

-- former addresses mailbridge unsubscribed itself, because their contact moved on from them:
-- no opt-out of the person
retired_addresses as (

    select distinct list_link_id, retired_email_key as email_key
    from attempts
    where retired_email_key is not null

),

-- the addresses CRM contacts have left, per list link, and when they left them: by the CRM's
-- history, and by the ESP's (an address the ESP contact moved on from, which keeps its
-- contact id: the CRM contact of the new address may have no history of it, and the CRM may
-- have no contact there yet; such a member is named by its address now)
former_addresses as (

    select
        links.list_link_id,
        history.crm_contact_id,
        cast(null as {{ dbt.type_string() }}) as member_email_key,
        history.former_email_key,
        history.changed_at as left_at
    from {{ ref('int_crm__address_history') }} as history
    cross join links

    union all

    select
        esp_now.list_link_id,
        crm_now.crm_contact_id,
        case when crm_now.crm_contact_id is null then esp_now.email_key end as member_email_key,
        former.email_key as former_email_key,
        former.last_seen_at
    from {{ ref('int_esp__member_addresses') }} as former
    inner join {{ ref('int_reconciliation__esp_side') }} as esp_now
        on former.esp_account = esp_now.esp_account
        and former.esp_list_id = esp_now.esp_list_id
        and former.esp_contact_id = esp_now.esp_contact_id
        and former.email_key <> esp_now.email_key
    left join {{ ref('int_reconciliation__crm_side') }} as crm_now
        on esp_now.list_link_id = crm_now.list_link_id
        and esp_now.email_key = crm_now.email_key

),

-- opt-outs of an address on a list: at the ESP (not mailbridge's own retiring of it), and in
-- the CRM by a contact holding it (not a status mailbridge wrote)
address_optouts as (

    select esp_side.list_link_id, esp_side.email_key, esp_side.status_changed_at as opted_out_at
    from {{ ref('int_reconciliation__esp_side') }} as esp_side
    left join retired_addresses
        on esp_side.list_link_id = retired_addresses.list_link_id
        and esp_side.email_key = retired_addresses.email_key
    where esp_side.status = 'unsubscribed' and retired_addresses.email_key is null

    union all

    select list_link_id, email_key, status_changed_at as opted_out_at
    from {{ ref('int_reconciliation__crm_side') }}
    where status = 'unsubscribed' and coalesce(status_set_by, '') not like 'mailbridge:%'

),

-- unsubscribes mailbridge sent: one for an address the ESP did not have created its member,
-- which is no signup
sent_unsubscribes as (

    select list_link_id, email_key, attempted_at, updated_at
    from attempts
    where action = 'unsubscribe' and target like 'esp:%'

),

-- subscribes mailbridge sent (a transmit or a DOI, for a CRM contact's or a person's request): a
-- new subscription at the address
sent_subscribes as (

    select list_link_id, email_key, attempted_at
    from attempts
    where action in ('transmit', 'start_doi') and target like 'esp:%'

),

-- an opt-out of an address a contact has since left is the person's: it speaks for the
-- address they moved on to (a duplicate contact may still hold the former address: the change
-- is then not one at the ESP, and the new address may be new to the ESP or a member of its
-- own). Not once the former address was signed up or opted in again at the ESP after the
-- contact left it, or mailbridge sent a transmit or DOI for it since: that is a subscription
-- of its own, and its opt-out is its own
final as (

    select
        moves.list_link_id,
        moves.crm_contact_id,
        moves.member_email_key as email_key,
        max(address_optouts.opted_out_at) as opted_out_at

    from former_addresses as moves
    inner join address_optouts
        on moves.list_link_id = address_optouts.list_link_id
        and moves.former_email_key = address_optouts.email_key
    left join {{ ref('int_reconciliation__esp_side') }} as esp_former
        on moves.list_link_id = esp_former.list_link_id
        and moves.former_email_key = esp_former.email_key
    where coalesce(esp_former.opted_in_at <= moves.left_at, true)
        and (
            coalesce(esp_former.signed_up_at <= moves.left_at, true)
            or exists (
                select 1 from sent_unsubscribes
                where sent_unsubscribes.list_link_id = moves.list_link_id
                    and sent_unsubscribes.email_key = moves.former_email_key
                    -- the ESP dates by the second
                    and esp_former.signed_up_at >= sent_unsubscribes.attempted_at - interval '2 seconds'
                    and esp_former.signed_up_at <= sent_unsubscribes.updated_at + interval '2 seconds'
            )
        )
        and not exists (
            select 1 from sent_subscribes
            where sent_subscribes.list_link_id = moves.list_link_id
                and sent_subscribes.email_key = moves.former_email_key
                and sent_subscribes.attempted_at > moves.left_at
        )
    group by moves.list_link_id, moves.crm_contact_id, moves.member_email_key

)

select * from final
