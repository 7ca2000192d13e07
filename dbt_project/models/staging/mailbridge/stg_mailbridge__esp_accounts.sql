with

source as (

    select * from {{ source('mailbridge', 'esp_accounts') }}

),

renamed as (

    select
        esp_account,
        esp_type,
        base_url,
        max_connections

    from source

)

select * from renamed
