-- CRM rows the latest extraction kept out of the load, and why.
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
        source.row_key,
        source.field,
        source.value,
        source.reason,
        source.run_id

    from source
    inner join latest_run on source.run_id = latest_run.run_id

)

select * from renamed
