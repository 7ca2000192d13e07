with

source as (

    select * from {{ source('crm', 'lists') }}

),

renamed as (

    select
        list_id as crm_list_id,
        name as list_name

    from source

)

select * from renamed
