-- What the compliance rules never let through, whoever asks for it: one row per action and
-- reconciliation state that refuses it, with the reason shown to the user. Every side that
-- opted out is covered: the ESP's, the CRM's and the blocklist. The push-back queue refuses
-- by these rows, and `mailbridge decide` warns by them.
with

-- actions that would put an address on a list
adding_actions (action) as (

    values ('transmit'), ('start_doi'), ('update_fields'), ('change_address_doi'), ('change_address_transmit')

),

-- actions that subscribe without a fresh opt-in
plain_subscribes (action) as (

    values ('transmit'), ('change_address_transmit')

),

-- CRM actions that can write the ESP's subscribed status into the CRM
crm_subscribing_actions (action) as (

    values ('set_status'), ('create_assignment'), ('create_contact')

),

unlisted_results (refused_value, reason) as (

    values
        ('blocked', 'the address is on the CRM blocklist: it is never transmitted'),
        ('invalid_email', 'the address is not valid: it is never transmitted')

),

-- states a plain subscribe must never override
opted_out_statuses (refused_value) as (

    values ('unsubscribed'), ('bounced_hard'), ('bounced')

),

final as (

    select
        adding_actions.action,
        'result' as refused_field,
        unlisted_results.refused_value,
        unlisted_results.reason,
        1 as priority

    from adding_actions
    cross join unlisted_results

    union all

    select
        action,
        'result' as refused_field,
        'blocked' as refused_value,
        'the address is on the CRM blocklist: the CRM never takes a subscribe for it from the ESP' as reason,
        1 as priority

    from crm_subscribing_actions

    union all

    select
        'transmit' as action,
        'esp_status' as refused_field,
        refused_value,
        'the member opted out at the ESP: only start_doi can bring it back' as reason,
        2 as priority

    from opted_out_statuses
    union all
    select 'transmit', 'esp_status', 'pending', 'the member is waiting for its DOI confirmation: it is not subscribed without it', 2

    union all

    select
        plain_subscribes.action,
        'crm_status' as refused_field,
        opted_out_statuses.refused_value,
        'the contact opted out in the CRM: it is not subscribed at the ESP without a fresh opt-in (start_doi)'
            as reason,
        3 as priority

    from plain_subscribes
    cross join opted_out_statuses

    union all

    -- a transmit adds a member the ESP does not have
    select
        'transmit' as action,
        'esp_status' as refused_field,
        'subscribed' as refused_value,
        'the member is subscribed at the ESP already: there is nothing to transmit' as reason,
        2 as priority

    union all

    select
        'transmit' as action,
        'result' as refused_field,
        'email_changed' as refused_value,
        'the address changed: its ESP member moves with the address change, a transmit would bring back the other address'
            as reason,
        2 as priority

    union all

    select
        'update_fields' as action,
        'result' as refused_field,
        'new_contact' as refused_value,
        'the CRM has no contact for this address: it has no values to send' as reason,
        2 as priority

    union all

    -- a DOI demotes a subscribed member to pending until it confirms again
    select
        'start_doi' as action,
        'esp_status' as refused_field,
        'subscribed' as refused_value,
        'the member is subscribed at the ESP: a new DOI would set it back to pending' as reason,
        2 as priority

    union all

    select
        'set_status' as action,
        'rule' as refused_field,
        'crm_optout_newer' as refused_value,
        'the CRM opt-out is newer than the ESP subscribe: the CRM keeps its opt-out' as reason,
        3 as priority

)

select * from final
