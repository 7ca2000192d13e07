with

source as (

    select * from {{ source('mailchimp', 'unsubscribes') }}

),

renamed as (

    select
        'mailchimp' as esp_type,
        esp_account,
        campaign_id,
        list_id as esp_list_id,
        email_id as esp_member_id,
        email_address,
        email_key,
        reason as unsubscribe_reason,
        timestamp as unsubscribed_at

    from source

)

select * from renamed
