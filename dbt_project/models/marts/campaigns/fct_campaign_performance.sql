-- One row per campaign: counts and rates as the ESPs show them, from the recipients mart.
-- Rates are null where their denominator is 0 (a draft, a campaign no one received).
with

campaigns as (

    select * from {{ ref('int_esp__campaigns') }}

),

recipients as (

    select * from {{ ref('fct_campaign_recipients') }}

),

links as (

    select esp_account, esp_list_id, min(list_link_id) as list_link_id
    from {{ ref('stg_mailbridge__list_links') }}
    group by esp_account, esp_list_id

),

counts as (

    select
        esp_account,
        campaign_id,
        count(case when was_sent then 1 end) as sent,
        count(case when bounce_type is not null then 1 end) as bounces,
        count(case when bounce_type = 'hard' then 1 end) as bounces_hard,
        count(case when bounce_type = 'soft' then 1 end) as bounces_soft,
        count(case when was_delivered then 1 end) as delivered,
        count(case when unique_open then 1 end) as unique_opens,
        cast(sum(opens) as bigint) as total_opens,
        count(case when clicked then 1 end) as unique_clicks,
        cast(sum(clicks) as bigint) as total_clicks,
        count(case when unsubscribed_via_campaign then 1 end) as unsubscribes,
        count(case when complained then 1 end) as complaints,
        count(case when was_delivered and not unique_open and not clicked then 1 end) as no_reaction

    from recipients
    group by esp_account, campaign_id

),

joined as (

    select
        {{ dbt.hash("concat_ws('|', campaigns.esp_account, campaigns.campaign_id)") }} as campaign_key,
        campaigns.esp_type,
        campaigns.esp_account,
        campaigns.campaign_id,
        campaigns.title as campaign_title,
        campaigns.subject_line,
        campaigns.campaign_status,
        campaigns.esp_list_id,
        links.list_link_id,
        campaigns.sent_at as send_time,
        coalesce(counts.sent, 0) as sent,
        coalesce(counts.bounces, 0) as bounces,
        coalesce(counts.bounces_hard, 0) as bounces_hard,
        coalesce(counts.bounces_soft, 0) as bounces_soft,
        coalesce(counts.delivered, 0) as delivered,
        coalesce(counts.unique_opens, 0) as unique_opens,
        coalesce(counts.total_opens, 0) as total_opens,
        coalesce(counts.unique_clicks, 0) as unique_clicks,
        coalesce(counts.total_clicks, 0) as total_clicks,
        coalesce(counts.unsubscribes, 0) as unsubscribes,
        coalesce(counts.complaints, 0) as complaints,
        coalesce(counts.no_reaction, 0) as no_reaction

    from campaigns
    left join counts
        on campaigns.esp_account = counts.esp_account
        and campaigns.campaign_id = counts.campaign_id
    left join links
        on campaigns.esp_account = links.esp_account
        and campaigns.esp_list_id = links.esp_list_id

),

final as (

    select
        *,
        {{ safe_rate('delivered', 'sent') }} as delivery_rate,
        {{ safe_rate('unique_opens', 'delivered') }} as open_rate,
        {{ safe_rate('unique_clicks', 'delivered') }} as click_rate,
        {{ safe_rate('unique_clicks', 'unique_opens') }} as click_to_open_rate,
        {{ safe_rate('unsubscribes', 'delivered') }} as unsubscribe_rate,
        {{ safe_rate('bounces', 'sent') }} as bounce_rate,
        {{ safe_rate('no_reaction', 'delivered') }} as no_reaction_rate

    from joined

)

select * from final
