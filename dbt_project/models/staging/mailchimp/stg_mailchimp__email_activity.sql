with

source as (

    select * from {{ source('mailchimp', 'email_activity') }}

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
        action as activity_type,
        case when action = 'bounce' then coalesce(bounce_type, 'general') end as bounce_type,
        nullif(url, '') as url,
        ip,
        timestamp as occurred_at

    from source

)

select * from renamed
