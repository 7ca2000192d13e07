-- The current version of each CRM contact (raw_crm.contacts keeps every version, scd2).
with

source as (

    select * from {{ source('crm', 'contacts') }}
    where _dlt_valid_to is null

),

renamed as (

    select
        ---------- ids
        contact_id as crm_contact_id,

        ---------- address
        email as email_address,
        email_key,
        email_error,

        ---------- fields
        nullif(trim(first_name), '') as first_name,
        nullif(trim(last_name), '') as last_name,
        nullif(trim(salutation), '') as salutation,
        custom_fields,

        ---------- timestamps
        modified_at,
        _dlt_valid_from as seen_since

    from source

)

select * from renamed
