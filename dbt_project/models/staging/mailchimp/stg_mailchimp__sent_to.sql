with

source as (

    select * from {{ source('mailchimp', 'sent_to') }}

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
        case status when 'sent' then 'delivered' when 'hard' then 'bounced_hard' when 'soft' then 'bounced_soft' end
            as delivery_status,
        open_count,
        last_open as last_opened_at

    from source

)

select * from renamed
