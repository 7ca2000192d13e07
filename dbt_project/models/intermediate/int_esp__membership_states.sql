-- What the membership history (snapshot snp_esp__membership_history) keeps of each membership
-- with an address: its status, when it began and the opt-in, one row per account, list and key.
{{ config(materialized='view') }}
select
    esp_account,
    esp_list_id,
    email_key,
    status,
    status_changed_at,
    status_time_precision,
    signed_up_at,
    opted_in_at,
    opt_in_ip

from {{ ref('int_esp__memberships') }}
where email_key is not null
