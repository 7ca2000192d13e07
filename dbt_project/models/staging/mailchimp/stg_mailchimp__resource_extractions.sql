-- The latest read of each Mailchimp resource per account and campaign: did it complete?
with

source as (

    select * from {{ source('mailchimp', 'resource_extractions') }}

),

renamed as (

    select
        ---------- ids
        'mailchimp' as esp_type,
        esp_account,
        resource,
        nullif(campaign_id, '') as campaign_id,
        run_id,

        ---------- outcome
        completed as is_completed,
        rows_fetched,
        error as error_message,

        ---------- timestamps
        started_at,
        finished_at

    from source

)

select * from renamed
