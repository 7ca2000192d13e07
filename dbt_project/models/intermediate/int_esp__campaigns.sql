-- Every ESP's campaigns in one shape: one row per ESP account and campaign. The ESPs come from
-- the `esp_campaign_models` var.
{{ config(materialized='view') }}
with

unioned as (

    {{ union_models('esp_campaign_models', [
        'esp_type', 'esp_account', 'campaign_id', 'esp_list_id', 'campaign_type', 'campaign_status',
        'title', 'subject_line', 'created_at', 'sent_at',
    ]) }}

)

select * from unioned
