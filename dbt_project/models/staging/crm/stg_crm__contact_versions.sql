-- Every version of each CRM contact as mailbridge saw it, from one sync to the next (scd2).
with

source as (

    select * from {{ source('crm', 'contacts') }}

),

renamed as (

    select
        contact_id as crm_contact_id,
        email as email_address,
        email_key,
        _dlt_valid_from as valid_from,
        _dlt_valid_to as valid_to

    from source

)

select * from renamed
