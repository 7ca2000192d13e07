-- Mailchimp's abuse reports: one row per campaign and recipient who marked it as spam.
with

source as (

    select * from {{ source('mailchimp', 'abuse_reports') }}

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
        date as complained_at

    from source

)

select * from renamed
