-- Every address each ESP contact has had in each list, across all ESPs.
with

unioned as (

    {{ union_models('esp_member_address_models', [
        'esp_type', 'esp_account', 'esp_list_id', 'esp_contact_id', 'esp_member_id', 'email_address',
        'email_key', 'last_seen_at',
    ]) }}

),

final as (

    select
        esp_type,
        esp_account,
        esp_list_id,
        esp_contact_id,
        esp_member_id,
        email_address,
        email_key,
        last_seen_at

    from unioned
    where email_key is not null

)

select * from final
