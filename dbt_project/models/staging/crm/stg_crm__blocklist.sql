-- CRM blocklist entries: an address (email_key) or a whole domain (`*@example.com`, blocked_domain).
with

source as (

    select * from {{ source('crm', 'blocklist') }}

),

renamed as (

    select
        email as blocked_entry,
        email_key,
        blocked_domain,
        email_error,
        reason as block_reason,
        blocked_at

    from source

)

select * from renamed
