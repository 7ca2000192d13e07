-- What the compliance rules never let through, whoever asks for it: one row per action and
-- reconciliation state that refuses it, with the reason shown to the user. The push-back
-- queue refuses by these rows, and `mailbridge decide` warns by them.
with

-- actions that would put an address on a list
adding_actions (action) as (

    values ('transmit'), ('start_doi'), ('update_fields'), ('change_address_doi'), ('change_address_transmit')

),

unlisted_results (refused_value, reason) as (

    values
        ('blocked', 'the address is on the CRM blocklist: it is never transmitted'),
        ('invalid_email', 'the address is not valid: it is never transmitted')

),

-- ESP states a plain subscribe must never override
opted_out_statuses (refused_value) as (

    values ('unsubscribed'), ('bounced_hard'), ('bounced'), ('pending')

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
        'transmit' as action,
        'esp_status' as refused_field,
        refused_value,
        'the member opted out at the ESP: only start_doi can bring it back' as reason,
        2 as priority

    from opted_out_statuses

)

select * from final
