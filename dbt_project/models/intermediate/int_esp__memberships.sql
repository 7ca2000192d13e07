-- Every ESP account's list memberships in one canonical shape, one row per account, list
-- and email key. The ESPs come from the `esp_membership_models` var, not from names here.
with

records as (

    select * from {{ ref('int_esp__member_records') }}

),

final as (

    select
        esp_type,
        esp_account,
        esp_list_id,
        esp_member_id,
        esp_contact_id,
        email_address,
        email_key,
        email_error,
        status,
        esp_status,
        status_changed_at,
        status_time_precision,
        record_changed_at,
        first_name,
        last_name,
        salutation,
        custom_fields,
        signed_up_at,
        opted_in_at,
        opt_in_ip,
        unsubscribe_reason,
        records_with_key

    from records
    where contact_rank = 1 and key_rank = 1

)

select * from final
