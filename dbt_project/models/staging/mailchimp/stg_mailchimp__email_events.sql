-- Mailchimp's per-recipient reports as canonical email events (int_esp__email_events).
-- Sent-to gives one `sent` per recipient, at the campaign's send time; email activity gives
-- the opens, clicks and bounces (hard, soft, else general); the unsubscribed report gives the
-- unsubscribes through the campaign, the abuse reports the complaints (marked as spam).
-- Mailchimp reports no delivery per recipient (delivered is sent less bounces, in the marts)
-- and no machine open per event: `is_machine_open` is null. The event id is hashed in
-- int_esp__email_events, for the campaigns it builds.
with

sent_to as (

    select * from {{ ref('stg_mailchimp__sent_to') }}

),

activity as (

    select * from {{ ref('stg_mailchimp__email_activity') }}

),

unsubscribes as (

    select * from {{ ref('stg_mailchimp__unsubscribes') }}

),

abuse_reports as (

    select * from {{ ref('stg_mailchimp__abuse_reports') }}

),

campaigns as (

    select esp_account, campaign_id, sent_at from {{ ref('stg_mailchimp__campaigns') }}

),

events as (

    select
        sent_to.esp_type,
        sent_to.esp_account,
        sent_to.esp_list_id,
        sent_to.campaign_id,
        sent_to.esp_member_id,
        sent_to.email_address,
        sent_to.email_key,
        'sent' as event_type,
        cast(null as {{ dbt.type_string() }}) as bounce_type,
        cast(null as {{ dbt.type_string() }}) as url,
        campaigns.sent_at as occurred_at,
        cast(null as boolean) as is_machine_open,
        'sent_to' as evidence_source

    from sent_to
    left join campaigns
        on sent_to.esp_account = campaigns.esp_account
        and sent_to.campaign_id = campaigns.campaign_id

    union all

    select
        esp_type,
        esp_account,
        esp_list_id,
        campaign_id,
        esp_member_id,
        email_address,
        email_key,
        activity_type,
        case when activity_type = 'bounce' then coalesce(bounce_type, 'general') end,
        url,
        occurred_at,
        cast(null as boolean),
        'email_activity'

    from activity
    where activity_type in ('open', 'click', 'bounce')

    union all

    select
        esp_type,
        esp_account,
        esp_list_id,
        campaign_id,
        esp_member_id,
        email_address,
        email_key,
        'unsubscribe',
        cast(null as {{ dbt.type_string() }}),
        cast(null as {{ dbt.type_string() }}),
        unsubscribed_at,
        cast(null as boolean),
        'unsubscribes'

    from unsubscribes

    union all

    select
        esp_type,
        esp_account,
        esp_list_id,
        campaign_id,
        esp_member_id,
        email_address,
        email_key,
        'complaint',
        cast(null as {{ dbt.type_string() }}),
        cast(null as {{ dbt.type_string() }}),
        complained_at,
        cast(null as boolean),
        'abuse_reports'

    from abuse_reports

)

select * from events
