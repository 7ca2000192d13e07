with

source as (

    select * from {{ source('mailchimp', 'reports') }}

),

renamed as (

    select
        'mailchimp' as esp_type,
        esp_account,
        campaign_id,
        list_id as esp_list_id,
        send_time as sent_at,

        ---------- totals and uniques
        emails_sent,
        -- Mailchimp reports no delivered count: sent minus bounces
        emails_sent - coalesce(hard_bounces, 0) - coalesce(soft_bounces, 0) as emails_delivered,
        hard_bounces,
        soft_bounces,
        syntax_errors,
        unsubscribed,
        abuse_reports as complaints,
        opens_total as total_opens,
        unique_opens,
        open_rate,
        clicks_total as total_clicks,
        unique_clicks,
        unique_subscriber_clicks as unique_clickers,
        click_rate

    from source

)

select * from renamed
