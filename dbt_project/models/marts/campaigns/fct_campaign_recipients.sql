-- One row per campaign and recipient: what the mailing did for this address. Built from the
-- canonical email events (int_esp__email_events), so every ESP gives the same columns.
with

events as (

    select * from {{ ref('int_esp__email_events') }}

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

-- the distinct links each recipient clicked, from the click events alone: a distinct count
-- inside the aggregate over every event would make DuckDB aggregate all of them the slow way
urls as (

    select esp_account, campaign_id, esp_member_id, count(distinct url) as clicked_urls
    from events
    where event_type = 'click'
    group by esp_account, campaign_id, esp_member_id

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

per_recipient as (

    select
        esp_type,
        esp_account,
        campaign_id,
        esp_member_id,
        max(esp_list_id) as esp_list_id,
        -- the address as the newest event knows it
        max(email_key) as email_key,
        max(email_address) as email_address,
        bool_or(event_type = 'sent') as was_sent,
        bool_or(event_type = 'delivered') as delivery_reported,
        -- a hard bounce outweighs a soft one, and a soft one a general one
        case
            when bool_or(bounce_type = 'hard') then 'hard'
            when bool_or(bounce_type = 'soft') then 'soft'
            when bool_or(event_type = 'bounce') then 'general'
        end as bounce_type,
        count(case when event_type = 'open' then 1 end) as opens,
        count(case when event_type = 'open' and is_machine_open then 1 end) as machine_opens,
        count(case when event_type = 'click' then 1 end) as clicks,
        bool_or(event_type = 'unsubscribe') as unsubscribed_via_campaign,
        bool_or(event_type = 'complaint') as complained,
        min(case when event_type = 'open' then occurred_at end) as first_open_at,
        min(case when event_type = 'click' then occurred_at end) as first_click_at,
        min(case when event_type = 'sent' then occurred_at end) as sent_at

    from events
    group by esp_type, esp_account, campaign_id, esp_member_id

),

joined as (

    select
        {{ dbt.hash("concat_ws('|', per_recipient.esp_account, per_recipient.campaign_id, per_recipient.esp_member_id)") }}
            as campaign_recipient_id,
        per_recipient.esp_type,
        per_recipient.esp_account,
        per_recipient.esp_list_id,
        links.list_link_id,
        per_recipient.campaign_id,
        per_recipient.esp_member_id,
        per_recipient.email_key,
        per_recipient.email_address,
        coalesce(by_key.crm_contact_id, by_former_key.crm_contact_id) as crm_contact_id,
        per_recipient.was_sent,
        -- where the ESP reports deliveries, a delivery; else sent and not bounced
        case
            when per_recipient.delivery_reported then true
            else per_recipient.was_sent and per_recipient.bounce_type is null
        end as was_delivered,
        per_recipient.bounce_type,
        per_recipient.opens,
        per_recipient.machine_opens,
        per_recipient.opens > 0 as unique_open,
        per_recipient.clicks,
        per_recipient.clicks > 0 as clicked,
        coalesce(urls.clicked_urls, 0) as clicked_urls,
        per_recipient.unsubscribed_via_campaign,
        per_recipient.complained,
        per_recipient.sent_at,
        per_recipient.first_open_at,
        per_recipient.first_click_at

    from per_recipient
    left join links
        on per_recipient.esp_account = links.esp_account
        and per_recipient.esp_list_id = links.esp_list_id
    left join urls
        on per_recipient.esp_account = urls.esp_account
        and per_recipient.campaign_id = urls.campaign_id
        and per_recipient.esp_member_id = urls.esp_member_id
    left join by_key
        on links.list_link_id = by_key.list_link_id
        and per_recipient.email_key = by_key.email_key
    left join by_former_key
        on by_key.crm_contact_id is null
        and links.list_link_id = by_former_key.list_link_id
        and per_recipient.email_key = by_former_key.former_email_key

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
