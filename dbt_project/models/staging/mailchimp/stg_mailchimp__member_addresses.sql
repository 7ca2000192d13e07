-- Every address each Mailchimp contact has had in a list: where an address change at the ESP shows.
with

source as (

    select * from {{ source('mailchimp', 'member_addresses') }}

),

renamed as (

    select
        'mailchimp' as esp_type,
        esp_account,
        list_id as esp_list_id,
        contact_id as esp_contact_id,
        id as esp_member_id,
        email_address,
        email_key,
        last_seen_at

    from source

)

select * from renamed
