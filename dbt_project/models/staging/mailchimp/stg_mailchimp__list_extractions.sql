-- One row per run and Mailchimp list: did the member read complete?
with

source as (

    select * from {{ source('mailchimp', 'list_extractions') }}

),

renamed as (

    select
        extraction_id,
        run_id,
        'mailchimp' as esp_type,
        esp_account,
        list_id as esp_list_id,
        mode as extraction_mode,
        since_last_changed,
        started_at,
        finished_at,
        completed as is_completed,
        members_fetched,
        error as error_message

    from source

)

select * from renamed
