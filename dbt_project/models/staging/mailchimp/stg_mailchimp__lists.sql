with

source as (

    select * from {{ source('mailchimp', 'lists') }}

),

renamed as (

    select
        'mailchimp' as esp_type,
        esp_account,
        id as esp_list_id,
        name as list_name,
        member_count as subscribed_count,
        unsubscribe_count as unsubscribed_count,
        cleaned_count as bounced_hard_count,
        date_created as created_at

    from source

)

select * from renamed
