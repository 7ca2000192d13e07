-- Each read of a CRM table: how many rows it read, kept out and loaded without a value.
with

source as (

    select * from {{ source('crm', 'extractions') }}

),

renamed as (

    select
        ---------- ids
        run_id,
        entity,

        ---------- counts
        rows_read,
        rows_rejected,
        values_rejected,

        ---------- timestamps
        started_at,
        finished_at

    from source

)

select * from renamed
