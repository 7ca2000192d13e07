-- Former addresses of CRM contacts, as the CRM's own change log records them.
with

source as (

    select * from {{ source('crm', 'email_history') }}

),

renamed as (

    select
        contact_id as crm_contact_id,
        email as email_address,
        email_key,
        email_error,
        valid_from,
        valid_to

    from source

)

select * from renamed
