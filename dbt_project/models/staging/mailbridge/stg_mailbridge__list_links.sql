with

source as (

    select * from {{ source('mailbridge', 'list_links') }}

),

renamed as (

    select
        id as list_link_id,
        crm_list_id,
        esp_account,
        esp_list_id

    from source

)

select * from renamed
