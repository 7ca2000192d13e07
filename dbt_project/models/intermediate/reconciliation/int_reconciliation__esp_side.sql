-- The ESP side of every list link: one row per link and email key (or member, when invalid).
with

links as (

    select * from {{ ref('stg_mailbridge__list_links') }}

),

final as (

    select
        links.list_link_id,
        esp.esp_account,
        esp.esp_list_id,
        esp.esp_member_id,
        esp.esp_contact_id,
        esp.email_address,
        esp.email_key,
        esp.email_error,
        esp.status,
        esp.esp_status,
        esp.status_changed_at,
        esp.status_time_precision,
        esp.signed_up_at,
        esp.opted_in_at,
        esp.first_name,
        esp.last_name,
        esp.salutation,
        esp.custom_fields,
        esp.records_with_key

    from links
    inner join {{ ref('int_esp__memberships') }} as esp
        on links.esp_account = esp.esp_account
        and links.esp_list_id = esp.esp_list_id

)

select * from final
