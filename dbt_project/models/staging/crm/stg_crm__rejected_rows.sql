-- What the latest CRM extraction could not read: one row per row and field, with the reason;
-- row_kept says whether the row was loaded without the value or kept out of the load.
with

source as (

    select * from {{ source('crm', 'rejected_rows') }}

),

latest_run as (

    select run_id
    from {{ source('crm', 'extractions') }}
    order by finished_at desc
    limit 1

),

renamed as (

    select
        source.entity,
        source.row_number,
        source.row_key,
        source.field,
        source.value,
        source.reason,
        source.row_kept,
        source.run_id

    from source
    inner join latest_run on source.run_id = latest_run.run_id

)

select * from renamed
