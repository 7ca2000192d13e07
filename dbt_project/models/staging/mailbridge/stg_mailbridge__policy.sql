-- The reconciliation policy from mailbridge.yaml: one row.
with

source as (

    select * from {{ source('mailbridge', 'policy') }}

),

renamed as (

    select
        transmit_new_members,
        doi_grace_period_days,
        email_change_is_consent

    from source

)

select * from renamed
