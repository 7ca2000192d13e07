-- The latest read of each ESP resource (lists, campaigns, a campaign's reports, …) per
-- account and campaign, across all ESPs: a read that broke off is read again next run.
with

unioned as (

    {{ union_models('esp_resource_extraction_models', [
        'esp_type', 'esp_account', 'resource', 'campaign_id', 'run_id', 'is_completed', 'rows_fetched',
        'error_message', 'started_at', 'finished_at',
    ]) }}

),

final as (

    select
        esp_type,
        esp_account,
        resource,
        campaign_id,
        run_id,
        is_completed,
        rows_fetched,
        error_message,
        started_at,
        finished_at

    from unioned

)

select * from final
