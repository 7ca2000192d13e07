with

source as (

    select * from {{ source('crm', 'blocklist') }}

),

renamed as (

    select
        email as blocked_entry,
        email_key,
        email_error,
        reason as block_reason,
        blocked_at

    from source

)

select * from renamed
