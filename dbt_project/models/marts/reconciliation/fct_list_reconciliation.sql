-- The reconciliation of every linked CRM list with its ESP list: one row per list link and
-- email key (an invalid CRM address: one row per contact), with the result, the rule that
-- decided it, the status both sides should end with and the recommended action.
-- The rules are DESIGN.md's; they read only the canonical intermediate models.
with

pairs as (

    select * from {{ ref('int_reconciliation__pairs') }}

),

links as (

    select * from {{ ref('stg_mailbridge__list_links') }}

),

policy as (

    select * from {{ ref('stg_mailbridge__policy') }}

),

extractions as (

    select * from {{ ref('int_esp__list_extractions') }}

),

blocked_keys as (

    select distinct email_key from {{ ref('stg_crm__blocklist') }}
    where email_key is not null

),

blocked_domains as (

    select distinct blocked_domain from {{ ref('stg_crm__blocklist') }}
    where blocked_domain is not null

),

-- a blocklisted address is the person's objection: it goes with the contact to a new address
-- (the contact held the address when it was blocked, or the block has no date). A blocked
-- domain stays the domain's
blocked_contacts as (

    select distinct history.crm_contact_id
    from {{ ref('int_crm__address_history') }} as history
    inner join {{ ref('stg_crm__blocklist') }} as blocklist
        on history.former_email_key = blocklist.email_key
    where blocklist.blocked_at is null or history.changed_at is null or blocklist.blocked_at <= history.changed_at

),

-- the CRM contact behind an ESP member that is not on the CRM list: the member gets its
-- assignment there (the duplicate rule picks one when several contacts share the address)
known_contacts as (

    select * from {{ ref('int_reconciliation__known_contacts') }}

),

-- when mailbridge last started a DOI for the address: the grace period counts from then
doi_started as (

    select
        list_link_id,
        email_key,
        max(attempted_at) as doi_sent_at

    from {{ source('ops', 'pushback_outbox') }}
    where action in ('start_doi', 'change_address_doi')
        and status in ('sent', 'confirmed')
    group by list_link_id, email_key

),

former_address_optouts as (

    select * from {{ ref('int_reconciliation__former_address_optouts') }}

),

-- each pair with the latest opt-out at an address its contact has left that still speaks for
-- them: by the CRM contact, or, for an ESP member with no CRM contact on the list, by its address
pairs_and_former_optouts as (

    select
        pairs.*,
        coalesce(by_contact.opted_out_at, by_member.opted_out_at) as former_address_opted_out_at

    from pairs
    left join former_address_optouts as by_contact
        on pairs.list_link_id = by_contact.list_link_id
        and pairs.crm_contact_id = by_contact.crm_contact_id
    left join former_address_optouts as by_member
        on pairs.crm_contact_id is null
        and by_member.crm_contact_id is null
        and pairs.list_link_id = by_member.list_link_id
        and pairs.email_key = by_member.email_key

),

field_differences as (

    select
        list_link_id,
        email_key,
        {{ dbt.listagg(
            "concat(field_name, ' (crm: ', coalesce(crm_value, ''), ', esp: ', coalesce(esp_value, ''), ')')",
            "'; '",
            "order by field_name"
        ) }} as differing_fields,
        sum(case when winner = 'crm' then 1 else 0 end) as crm_wins,
        sum(case when winner = 'esp' then 1 else 0 end) as esp_wins,
        count(*) as differences

    from {{ ref('int_reconciliation__field_differences') }}
    group by list_link_id, email_key

),

compared as (

    select
        pairs.*,
        links.crm_list_id,
        links.esp_account,
        links.esp_list_id,
        coalesce(extractions.is_completed, false) as is_extraction_complete,
        blocked_keys.email_key is not null or blocked_domains.blocked_domain is not null
            or blocked_former_keys.email_key is not null or blocked_contacts.crm_contact_id is not null
            as is_blocked,
        known_contacts.email_key is not null as is_known_contact,
        known_contacts.crm_contact_id as known_contact_id,
        coalesce(pairs.duplicate_note, known_contacts.duplicate_note) as contact_note,
        field_differences.differing_fields,
        coalesce(field_differences.differences, 0) as field_difference_count,
        coalesce(field_differences.crm_wins, 0) as crm_wins,
        coalesce(field_differences.esp_wins, 0) as esp_wins,
        pairs.crm_status in ('subscribed', 'bounced_soft') as crm_subscribed,
        pairs.esp_status in ('subscribed', 'bounced_soft') as esp_subscribed,
        -- equal times: the opt-out wins, so "newer" for an opt-out means "not older"
        coalesce(pairs.esp_status_changed_at >= pairs.crm_status_changed_at, true) as esp_not_older,
        coalesce(pairs.crm_status_changed_at >= pairs.esp_status_changed_at, true) as crm_not_older,
        coalesce(pairs.esp_status_changed_at > pairs.crm_status_changed_at, false) as esp_newer_strictly,
        -- the DOI started when mailbridge sent it or when the ESP says the member became
        -- pending, the later of the two known; a CRM status date says nothing about it
        coalesce(
            {{ reconcile_as_of() }} <= case
                when doi_started.doi_sent_at is null then coalesce(pairs.esp_status_changed_at, pairs.crm_status_changed_at)
                when pairs.esp_status_changed_at is null or doi_started.doi_sent_at > pairs.esp_status_changed_at
                    then doi_started.doi_sent_at
                else pairs.esp_status_changed_at
            end + cast(policy.doi_grace_period_days as integer) * interval '1 day',
            false
        ) as within_doi_grace,
        -- not older than the status of the address now: the CRM's, and the ESP's subscribe or DOI
        pairs.former_address_opted_out_at is not null
            and coalesce(pairs.former_address_opted_out_at >= pairs.crm_status_changed_at, true)
            and (
                not coalesce(pairs.esp_status in ('subscribed', 'bounced_soft', 'pending'), false)
                or coalesce(pairs.former_address_opted_out_at >= pairs.esp_status_changed_at, true)
            )
            as is_opted_out_at_former_address,
        policy.transmit_new_members,
        policy.email_change_is_consent

    from pairs_and_former_optouts as pairs
    inner join links on pairs.list_link_id = links.list_link_id
    cross join policy
    left join extractions
        on links.esp_account = extractions.esp_account
        and links.esp_list_id = extractions.esp_list_id
    left join blocked_keys on pairs.email_key = blocked_keys.email_key
    -- an address changed on either side whose former one is blocked
    left join blocked_keys as blocked_former_keys on pairs.former_email_key = blocked_former_keys.email_key
    left join blocked_contacts on pairs.crm_contact_id = blocked_contacts.crm_contact_id
    left join blocked_domains
        on {{ dbt.split_part('pairs.email_key', "'@'", 2) }} = blocked_domains.blocked_domain
    left join known_contacts
        on pairs.list_link_id = known_contacts.list_link_id
        and pairs.email_key = known_contacts.email_key
    left join doi_started
        on pairs.list_link_id = doi_started.list_link_id
        and pairs.email_key = doi_started.email_key
    left join field_differences
        on pairs.list_link_id = field_differences.list_link_id
        and pairs.email_key = field_differences.email_key

),

status_rules as (

    select
        *,
        case
            when not (in_crm and in_esp) then null
            -- the person opted out at an address they moved on from, after (or not clearly before)
            -- either side's subscribe here
            when is_opted_out_at_former_address
                and (crm_subscribed or esp_subscribed or crm_status = 'pending' or esp_status = 'pending')
                then 'former_address_opted_out_at_esp'
            when crm_status = esp_status then null
            when crm_subscribed and esp_status = 'pending' then
                case when within_doi_grace then 'doi_pending_within_grace' else 'doi_pending_past_grace' end
            when crm_subscribed and not esp_subscribed then
                case when esp_not_older then 'esp_optout_newer' else 'crm_subscribe_newer' end
            when esp_subscribed and crm_status = 'pending' then 'esp_confirmed_crm_pending'
            when esp_subscribed and not crm_subscribed then
                case when crm_not_older then 'crm_optout_newer' else 'esp_subscribe_newer' end
            -- both subscribed or both not, in different words (unsubscribed vs bounced_hard): the
            -- ESP's word is newer only by a real status time; an upper bound moves with any edit.
            -- A hard bounce dated by an upper bound is taken too (the address is undeliverable),
            -- but not over a CRM opt-out: that is the stronger word, and an edit at the ESP
            -- (even the push's own) would otherwise flip it
            when esp_newer_strictly
                and (
                    coalesce(esp_status_time_precision, 'upper_bound') <> 'upper_bound'
                    or (esp_status = 'bounced_hard' and crm_status <> 'unsubscribed')
                )
                then 'esp_status_newer'
        end as status_rule

    from compared

),


decided as (

    select
        *,
        case
            when not is_extraction_complete then 'extraction_incomplete'
            when email_key is null then 'invalid_address'
            when is_blocked then 'blocklisted'
            when changed_in = 'crm' then 'email_changed_in_crm'
            when changed_in = 'esp' then 'email_changed_at_esp'
            when in_crm and in_esp and status_rule is not null then status_rule
            when in_crm and in_esp and field_difference_count = 0 then 'both_agree'
            when in_crm and in_esp and crm_wins = field_difference_count then 'fields_differ_crm_wins'
            when in_crm and in_esp and esp_wins = field_difference_count then 'fields_differ_esp_wins'
            when in_crm and in_esp then 'fields_differ'
            when in_esp and esp_status = 'archived' then 'archived_at_esp_only'
            -- subscribed before the address changed; a subscribe after it is the person's own
            when in_esp and coalesce(is_former_address, false) and esp_subscribed
                and coalesce(esp_status_changed_at <= former_address_changed_at, true)
                then 'former_address_still_subscribed'
            when in_esp and coalesce(is_former_address, false) and not esp_subscribed then 'former_address_retired'
            -- an ESP member the CRM has no contact for on the list, that moved on from an address
            -- the person opted out at: unsubscribed, and the CRM learns of it unsubscribed
            when in_esp and is_opted_out_at_former_address and (esp_subscribed or esp_status = 'pending')
                then 'former_address_opted_out_at_esp'
            when in_esp and is_known_contact then 'esp_member_crm_contact'
            when in_esp then 'esp_member_unknown_to_crm'
            when crm_subscribed and is_opted_out_at_former_address then 'former_address_opted_out_at_esp'
            when crm_subscribed then 'crm_subscribed_unknown_to_esp'
            when crm_status = 'pending' then 'crm_pending_unknown_to_esp'
            else 'crm_not_subscribed_unknown_to_esp'
        end as rule

    from status_rules

),

-- what each status rule asks for (the doi_pending rules ask for nothing or a decision)
status_actions as (

    select
        *,
        case
            when status_rule in ('esp_optout_newer', 'esp_subscribe_newer', 'esp_confirmed_crm_pending', 'esp_status_newer')
                then case when esp_status = 'bounced_hard' then 'mark_bounced' else 'set_status' end
            when status_rule = 'crm_optout_newer' then 'unsubscribe'
            when status_rule = 'crm_subscribe_newer' then 'start_doi'
            -- the ESP member first; the CRM follows as the status action
            when status_rule = 'former_address_opted_out_at_esp' then
                case when esp_status in ('subscribed', 'pending', 'bounced_soft') then 'unsubscribe' else 'set_status' end
        end as status_rule_action

    from decided

),

final as (

    select
        ---------- ids
        -- concat skips a NULL: the contact's prefix only when there is a contact, or every ESP
        -- member with an invalid address on the list would share one id
        {{ dbt.hash("concat(list_link_id, '|', coalesce(email_key, case when crm_contact_id is not null then concat('contact:', crm_contact_id) end, concat('member:', esp_member_id)))") }}
            as reconciliation_id,
        list_link_id,
        esp_account,
        esp_list_id,
        crm_list_id,
        email_key,
        coalesce(crm_email_address, esp_email_address) as email_address,
        former_email_key,
        coalesce(crm_contact_id, known_contact_id) as crm_contact_id,
        -- of several contacts with the address, the one whose status is its consent
        coalesce(crm_consent_contact_id, crm_contact_id, known_contact_id) as crm_consent_contact_id,
        esp_member_id,

        ---------- result
        case
            when rule = 'extraction_incomplete' then 'aborted'
            when rule = 'invalid_address' then 'invalid_email'
            when rule = 'blocklisted' then 'blocked'
            when rule in ('email_changed_in_crm', 'email_changed_at_esp', 'former_address_still_subscribed')
                then 'email_changed'
            when rule in ('esp_optout_newer', 'esp_subscribe_newer', 'esp_confirmed_crm_pending', 'esp_status_newer',
                          'former_address_opted_out_at_esp')
                then 'esp_newer'
            when rule in ('both_agree', 'doi_pending_within_grace', 'archived_at_esp_only', 'former_address_retired',
                          'crm_not_subscribed_unknown_to_esp') then 'in_sync'
            when rule = 'esp_member_crm_contact' then 'new_in_list'
            when rule = 'esp_member_unknown_to_crm' then 'new_contact'
            when rule in ('crm_subscribed_unknown_to_esp', 'crm_pending_unknown_to_esp') then 'not_in_esp'
            else 'conflict'
        end as result,
        rule,
        nullif(concat_ws('; ',
            case when in_crm and in_esp and crm_status <> esp_status
                then concat('status (crm: ', crm_status, ', esp: ', esp_status, ')') end,
            differing_fields
        ), '') as conflict_fields,
        email_error,

        ---------- both sides
        crm_status,
        crm_status_changed_at,
        crm_status_set_by,
        -- the ESP's word on a contact it knows only at a former address: that member's opt-out
        -- (the CRM takes it, dated by it)
        case when rule = 'former_address_opted_out_at_esp' and not in_esp then 'unsubscribed' else esp_status end
            as esp_status,
        case
            when rule = 'former_address_opted_out_at_esp' and not in_esp then former_address_opted_out_at
            else esp_status_changed_at
        end as esp_status_changed_at,
        case
            when rule = 'former_address_opted_out_at_esp' and not in_esp then 'upper_bound'
            else esp_status_time_precision
        end as esp_status_time_precision,
        case
            when rule in ('extraction_incomplete', 'invalid_address') then null
            when rule = 'blocklisted' then 'unsubscribed'
            -- a contact who opted out keeps the opt-out at the new address too
            when rule = 'email_changed_in_crm' and not (crm_subscribed or crm_status = 'pending') then crm_status
            when rule = 'email_changed_in_crm' then
                case when email_change_is_consent then 'subscribed' else 'pending' end
            when rule = 'email_changed_at_esp' then esp_status
            when rule in ('esp_optout_newer', 'esp_subscribe_newer', 'esp_confirmed_crm_pending', 'esp_status_newer')
                then esp_status
            when rule = 'crm_optout_newer' then crm_status
            when rule = 'former_address_opted_out_at_esp' then 'unsubscribed'
            when rule = 'crm_subscribe_newer' then 'pending'
            when rule in ('doi_pending_within_grace', 'doi_pending_past_grace') then 'pending'
            when in_crm and in_esp then crm_status
            when in_esp and esp_status <> 'archived' then esp_status
            when rule = 'crm_subscribed_unknown_to_esp' and transmit_new_members then 'subscribed'
            when rule = 'crm_pending_unknown_to_esp' then 'pending'
            when rule = 'crm_not_subscribed_unknown_to_esp' then crm_status
        end as resolved_status,

        ---------- what to do
        case
            when rule in ('extraction_incomplete', 'invalid_address') then 'none'
            when rule = 'blocklisted' then
                case when esp_status in ('subscribed', 'pending', 'bounced_soft') then 'unsubscribe' else 'none' end
            -- the former address is unsubscribed; the new one is not subscribed for an opted-out contact
            when rule = 'email_changed_in_crm' and not (crm_subscribed or crm_status = 'pending') then
                case when esp_status in ('subscribed', 'pending', 'bounced_soft') then 'unsubscribe' else 'none' end
            when rule = 'email_changed_in_crm' then
                case when email_change_is_consent and crm_subscribed then 'change_address_transmit'
                    else 'change_address_doi' end
            when rule = 'email_changed_at_esp' then 'update_crm_email'
            when rule = status_rule and status_rule_action is not null then status_rule_action
            when rule = 'former_address_still_subscribed' then 'unsubscribe'
            when rule = 'former_address_opted_out_at_esp' and not in_crm and in_esp then 'unsubscribe'
            when rule = 'former_address_opted_out_at_esp' then 'set_status'
            when rule = 'fields_differ_crm_wins' then 'update_fields'
            when rule = 'fields_differ_esp_wins' then 'update_crm_fields'
            when rule in ('doi_pending_past_grace', 'fields_differ') then 'await_decision'
            when rule = 'esp_member_crm_contact' then 'create_assignment'
            when rule = 'esp_member_unknown_to_crm' then 'create_contact'
            when rule = 'crm_subscribed_unknown_to_esp' then
                case when transmit_new_members then 'transmit' else 'await_decision' end
            when rule = 'crm_pending_unknown_to_esp' then 'start_doi'
            else 'none'
        end as recommended_action,
        -- an address changed at the ESP whose status moved too: the status rule's action goes
        -- with the address change, in the same push
        -- and the CRM's opt-out beside an ESP unsubscribe of the person's former-address opt-out
        case
            when rule = 'email_changed_at_esp' then status_rule_action
            when rule = 'former_address_opted_out_at_esp' and status_rule_action = 'unsubscribe'
                and (crm_subscribed or crm_status = 'pending') then 'set_status'
            when rule = 'former_address_opted_out_at_esp' and not in_crm and in_esp then
                case when is_known_contact then 'create_assignment' else 'create_contact' end
        end as status_action,
        nullif(concat_ws('; ',
            case when contact_note like 'duplicate_contacts_undecided%' then contact_note end,
            case when esp_records_with_key > 1 then concat(
                'esp_duplicate_records: ', cast(esp_records_with_key as {{ dbt.type_string() }}),
                ' ESP records share this key; the newest is compared'
            ) end
        ), '') as warnings,
        contact_note as duplicate_note,
        -- what a decision was made on: when it changes, the decision is stale
        {{ dbt.hash("concat_ws('|', list_link_id, coalesce(email_key, ''), rule, coalesce(crm_status, ''), coalesce(cast(crm_status_changed_at as " ~ dbt.type_string() ~ "), ''), coalesce(esp_status, ''), coalesce(cast(esp_status_changed_at as " ~ dbt.type_string() ~ "), ''), coalesce(differing_fields, ''))") }}
            as state_fingerprint,
        crm_task,
        crm_task_contact_id,
        coalesce(
            esp_status in ('unsubscribed', 'bounced_hard')
                and coalesce(crm_status, 'unsubscribed') not in ('subscribed', 'pending', 'bounced_soft'),
            false
        ) as is_opted_out_on_both_sides,

        ---------- run
        cast({{ run_id() }} as {{ dbt.type_string() }}) as run_id,
        {{ dbt.current_timestamp() }} as reconciled_at

    from status_actions

)

select * from final
