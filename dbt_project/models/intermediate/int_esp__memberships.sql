-- Every ESP account's list memberships in one canonical shape, one row per account, list
-- and email key. The ESPs come from the `esp_membership_models` var, not from names here.
with

unioned as (

    {{ union_models('esp_membership_models', [
        'esp_type', 'esp_account', 'esp_list_id', 'esp_member_id', 'esp_contact_id', 'email_address',
        'email_key', 'email_error', 'status', 'esp_status', 'status_changed_at', 'status_time_precision',
        'record_changed_at', 'first_name', 'last_name',
        'salutation', 'custom_fields', 'signed_up_at', 'opted_in_at', 'opt_in_ip', 'unsubscribe_reason',
    ]) }}

),

current_records as (

    select
        *,
        -- an incremental read merges on member id; after an address change at the ESP the old
        -- record stays behind under the same contact: the newest record of a contact is the one
        row_number() over (
            partition by esp_account, esp_list_id, coalesce(esp_contact_id, esp_member_id)
            order by record_changed_at desc, esp_member_id
        ) as contact_rank

    from unioned

),

ranked as (

    select
        *,
        -- two ESP records can share a key (e.g. an IDN domain spelt both ways): newest wins
        row_number() over (
            partition by esp_account, esp_list_id, coalesce(email_key, esp_member_id)
            order by record_changed_at desc, esp_member_id
        ) as key_rank,
        count(*) over (
            partition by esp_account, esp_list_id, coalesce(email_key, esp_member_id)
        ) as records_with_key

    from current_records
    where contact_rank = 1

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

    from ranked
    where key_rank = 1

)

select * from final
