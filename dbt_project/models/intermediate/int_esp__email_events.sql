-- Every email event of every ESP in one shape: one row per event (sent, delivered where the
-- ESP reports it, bounce, open, click, unsubscribe, complaint). Each ESP's staging model maps
-- its own words; the ESPs come from the `esp_email_event_models` var.
with

unioned as (

    {{ union_models('esp_email_event_models', [
        'event_id', 'esp_type', 'esp_account', 'esp_list_id', 'campaign_id', 'esp_member_id',
        'email_address', 'email_key', 'event_type', 'bounce_type', 'url', 'occurred_at',
        'is_machine_open', 'evidence_source',
    ]) }}

)

select * from unioned
