-- Mailchimp members in the canonical membership shape; Mailchimp's states are mapped here only.
with

source as (

    select * from {{ source('mailchimp', 'members') }}

),

renamed as (

    select
        ---------- ids
        'mailchimp' as esp_type,
        esp_account,
        list_id as esp_list_id,
        id as esp_member_id,
        -- Mailchimp's contact_id stays when the address changes; the member id does not
        contact_id as esp_contact_id,
        extraction_id,

        ---------- address
        email_address,
        email_key,
        email_error,

        ---------- status
        case status
            when 'subscribed' then 'subscribed'
            when 'unsubscribed' then 'unsubscribed'
            when 'cleaned' then 'bounced_hard'
            when 'pending' then 'pending'
            -- never opted in to marketing mail: not subscribed, as far as the CRM is concerned
            when 'transactional' then 'unsubscribed'
            when 'archived' then 'archived'
        end as status,
        status as esp_status,
        unsubscribe_reason,

        ---------- fields
        nullif(trim(first_name), '') as first_name,
        nullif(trim(last_name), '') as last_name,
        nullif(trim({{ json_text_field('merge_fields', 'SALUTATION') }}), '') as salutation,
        language,
        merge_fields as custom_fields,

        ---------- consent
        ip_signup as signup_ip,
        ip_opt as opt_in_ip,

        ---------- timestamps
        timestamp_signup as signed_up_at,
        timestamp_opt as opted_in_at,
        -- Mailchimp keeps no status time. A subscribe is dated by its opt-in; any other
        -- status only by last_changed, which also moves on field and tag edits: an upper bound
        case
            when status = 'subscribed' then coalesce(timestamp_opt, timestamp_signup)
            else last_changed
        end as status_changed_at,
        case
            when status = 'subscribed' and coalesce(timestamp_opt, timestamp_signup) is not null then 'opt_in'
            else 'upper_bound'
        end as status_time_precision,
        last_changed as record_changed_at

    from source

)

select * from renamed
