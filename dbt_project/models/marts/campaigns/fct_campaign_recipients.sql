-- One row per campaign and recipient: what the mailing did for this address. Built from the
-- canonical email events, summed up per recipient (int_esp__campaign_recipient_activity), so
-- every ESP gives the same columns.
with

recipients as (

    select * from {{ ref('int_esp__campaign_recipient_activity') }}

),

-- an ESP list linked to more than one CRM list: its campaigns count under the first link
links as (

    select esp_account, esp_list_id, min(list_link_id) as list_link_id
    from {{ ref('stg_mailbridge__list_links') }}
    group by esp_account, esp_list_id

),

reconciliation as (

    select list_link_id, email_key, former_email_key, crm_contact_id
    from {{ ref('fct_list_reconciliation') }}
    where crm_contact_id is not null

),

-- one contact per key (the first by id) where the reconciliation holds a key twice (a duplicate
-- contact), so each recipient joins at most one row of each
by_key as (

    select list_link_id, email_key, min(crm_contact_id) as crm_contact_id
    from reconciliation
    group by list_link_id, email_key

),

by_former_key as (

    select list_link_id, former_email_key, min(crm_contact_id) as crm_contact_id
    from reconciliation
    where former_email_key is not null
    group by list_link_id, former_email_key

),

joined as (

    select
        recipients.campaign_recipient_id,
        recipients.esp_type,
        recipients.esp_account,
        recipients.esp_list_id,
        links.list_link_id,
        recipients.campaign_id,
        recipients.esp_member_id,
        recipients.email_key,
        recipients.email_address,
        coalesce(by_key.crm_contact_id, by_former_key.crm_contact_id) as crm_contact_id,
        recipients.was_sent,
        -- where the ESP reports deliveries, a delivery; else sent and not bounced
        case
            when recipients.delivery_reported then true
            else recipients.was_sent and recipients.bounce_type is null
        end as was_delivered,
        recipients.bounce_type,
        recipients.opens,
        recipients.machine_opens,
        recipients.opens > 0 as unique_open,
        recipients.clicks,
        recipients.clicks > 0 as clicked,
        recipients.clicked_urls,
        recipients.unsubscribed_via_campaign,
        recipients.complained,
        recipients.sent_at,
        recipients.first_open_at,
        recipients.first_click_at

    from recipients
    left join links
        on recipients.esp_account = links.esp_account
        and recipients.esp_list_id = links.esp_list_id
    left join by_key
        on links.list_link_id = by_key.list_link_id
        and recipients.email_key = by_key.email_key
    left join by_former_key
        on by_key.crm_contact_id is null
        and links.list_link_id = by_former_key.list_link_id
        and recipients.email_key = by_former_key.former_email_key

),

final as (

    select
        campaign_recipient_id, esp_type, esp_account, esp_list_id, list_link_id, campaign_id,
        esp_member_id, email_key, email_address, crm_contact_id, was_sent, was_delivered,
        bounce_type, opens, machine_opens, unique_open, clicks, clicked, clicked_urls,
        unsubscribed_via_campaign, complained, sent_at, first_open_at, first_click_at

    from joined

)

select * from final
