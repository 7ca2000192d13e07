-- Every ESP member record read, in one canonical shape, with how it ranks: the newest record
-- of an ESP contact (`contact_rank` 1) and, among those, the newest of an email key
-- (`key_rank` 1) is the membership (int_esp__memberships). The others are accounted for
-- here (fct_esp_row_accounting). The ESPs come from the `esp_membership_models` var.
{{ config(materialized='view') }}
with

unioned as (

    {{ union_models('esp_membership_models', [
        'esp_type', 'esp_account', 'esp_list_id', 'esp_member_id', 'esp_contact_id', 'extraction_id',
        'email_address', 'email_key', 'email_error', 'status', 'esp_status', 'status_changed_at',
        'status_time_precision', 'record_changed_at', 'first_name', 'last_name',
        'salutation', 'custom_fields', 'signed_up_at', 'opted_in_at', 'opt_in_ip', 'unsubscribe_reason',
    ]) }}

),

by_contact as (

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

by_key as (

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

    from by_contact
    where contact_rank = 1

),

final as (

    select * from by_key

    union all

    select
        *,
        cast(null as bigint) as key_rank,
        cast(null as bigint) as records_with_key

    from by_contact
    where contact_rank > 1

)

select * from final
