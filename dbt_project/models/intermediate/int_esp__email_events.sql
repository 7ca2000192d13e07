{{
    config(
        materialized='incremental',
        incremental_strategy='replace_keys',
        unique_key=['esp_account', 'campaign_id'],
        on_schema_change='sync_all_columns',
    )
}}
-- Every email event of every ESP in one shape: one row per event (sent, delivered where the
-- ESP reports it, bounce, open, click, unsubscribe, complaint). Each ESP's staging model maps
-- its own words; the ESPs come from the `esp_email_event_models` var.
--
-- Incremental by campaign: a campaign's events are built again only when what its ESP reports
-- say about it changed (its `campaign_fingerprint`, over every column of every event), or this
-- model did (the fingerprint ends with its version: a release with other rules builds all). A sync
-- reads the reports of recent campaigns again and finds them mostly unchanged; older ones are
-- settled. A full sync (`dbt build --full-refresh`) builds every campaign.
with

unioned as (

    {{ union_models('esp_email_event_models', [
        'esp_type', 'esp_account', 'esp_list_id', 'campaign_id', 'esp_member_id',
        'email_address', 'email_key', 'event_type', 'bounce_type', 'url', 'occurred_at',
        'is_machine_open', 'evidence_source',
    ]) }}

),

fingerprints as (

    select
        esp_account,
        campaign_id,
        {{ content_fingerprint([
            'esp_type', 'esp_list_id', 'esp_member_id', 'email_address', 'email_key', 'event_type',
            'bounce_type', 'url', 'occurred_at', 'is_machine_open', 'evidence_source',
        ]) }} as campaign_fingerprint
    from unioned
    group by esp_account, campaign_id

),

changed as (

    {{ changed_groups('fingerprints', ['esp_account', 'campaign_id'], 'campaign_fingerprint',
        incremental_ready(['campaign_fingerprint'])) }}

)

-- the id is hashed here, after the unchanged campaigns are left out, not in each ESP's staging
select
    {{ dbt.hash("concat_ws('|', unioned.esp_account, unioned.campaign_id, unioned.esp_member_id, unioned.event_type, coalesce(cast(unioned.occurred_at as " ~ dbt.type_string() ~ "), ''), coalesce(unioned.url, ''))") }}
        as event_id,
    unioned.*,
    changed.campaign_fingerprint
from unioned
inner join changed
    on unioned.esp_account = changed.esp_account
    and unioned.campaign_id = changed.campaign_id
