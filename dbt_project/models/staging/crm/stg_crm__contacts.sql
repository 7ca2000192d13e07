with

source as (

    select * from {{ source('crm', 'contacts') }}

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

        ---------- timestamps
        modified_at

    from source

)

select * from renamed
