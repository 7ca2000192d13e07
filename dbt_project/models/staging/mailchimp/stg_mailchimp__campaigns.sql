with

source as (

    select * from {{ source('mailchimp', 'campaigns') }}

),

renamed as (

    select
        'mailchimp' as esp_type,
        esp_account,
        id as campaign_id,
        list_id as esp_list_id,
        type as campaign_type,
        status as campaign_status,
        title,
        subject_line,
        emails_sent,
        create_time as created_at,
        send_time as sent_at

    from source

)

select * from renamed
