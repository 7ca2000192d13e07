-- Every compared field (first_name, last_name, salutation and the mapped ones) and who wins it.
with

source as (

    select * from {{ source('mailbridge', 'field_policies') }}

),

renamed as (

    select
        field_name,
        is_standard,
        esp_field,
        field_type,
        winner

    from source

)

select * from renamed
