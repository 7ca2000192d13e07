{{
    config(
        materialized='incremental',
        incremental_strategy='replace_keys',
        unique_key=['esp_account', 'campaign_id'],
        on_schema_change='sync_all_columns',
    )
}}
-- One row per campaign and recipient: the recipient's email events summed up, before any CRM
-- contact is joined (fct_campaign_recipients). Incremental by campaign like the events it sums:
-- a campaign is summed again only when its events' `campaign_fingerprint` moved, or this model
-- changed.
with

events as (

    select * from {{ ref('int_esp__email_events') }}

),

fingerprints as (

    -- the events' fingerprint, and this model's version
    select esp_account, campaign_id, any_value(campaign_fingerprint) || ':{{ model_version() }}' as campaign_fingerprint
    from events
    group by esp_account, campaign_id

),

changed as (

    {{ changed_groups('fingerprints', ['esp_account', 'campaign_id'], 'campaign_fingerprint',
        incremental_ready(['campaign_fingerprint'])) }}

),

changed_events as (

    select events.* exclude (campaign_fingerprint), changed.campaign_fingerprint
    from events
    inner join changed
        on events.esp_account = changed.esp_account
        and events.campaign_id = changed.campaign_id

),

-- the distinct links each recipient clicked, from the click events alone: a distinct count
-- inside the aggregate over every event would make DuckDB aggregate all of them the slow way
urls as (

    select esp_account, campaign_id, esp_member_id, count(distinct url) as clicked_urls
    from changed_events
    where event_type = 'click'
    group by esp_account, campaign_id, esp_member_id

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
        min(case when event_type = 'sent' then occurred_at end) as sent_at,
        any_value(campaign_fingerprint) as campaign_fingerprint

    from changed_events
    group by esp_type, esp_account, campaign_id, esp_member_id

)

-- the mart's id is hashed here, once per campaign built, not on every build of the mart
select
    {{ dbt.hash("concat_ws('|', per_recipient.esp_account, per_recipient.campaign_id, per_recipient.esp_member_id)") }}
        as campaign_recipient_id,
    per_recipient.*,
    coalesce(urls.clicked_urls, 0) as clicked_urls
from per_recipient
left join urls
    on per_recipient.esp_account = urls.esp_account
    and per_recipient.campaign_id = urls.campaign_id
    and per_recipient.esp_member_id = urls.esp_member_id
