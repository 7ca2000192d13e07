-- Where each ESP member record the latest extraction of each list read went: one row per run,
-- ESP account, list and outcome, with the number of records. A record read reaches the
-- reconciliation, or is an older record of a contact the ESP has since moved, or another record
-- of an address (the esp_duplicate_records warning), or is on a list no link names. `lost`
-- (read but not loaded) and `unaccounted` (loaded, but no mart and no event has it) are what the
-- test every_esp_row_is_accounted_for refuses: records read = records accounted, per list and sync.
with

extractions as (

    select * from {{ ref('int_esp__list_extractions') }}

),

records as (

    select records.*
    from {{ ref('int_esp__member_records') }} as records
    inner join extractions
        on records.esp_account = extractions.esp_account
        and records.esp_list_id = extractions.esp_list_id
        and records.extraction_id = extractions.extraction_id

),

links as (

    select distinct esp_account, esp_list_id from {{ ref('stg_mailbridge__list_links') }}

),

reconciled as (

    select distinct esp_account, esp_list_id, esp_member_id
    from {{ ref('fct_list_reconciliation') }}
    where esp_member_id is not null

),

record_outcomes as (

    select
        records.esp_account,
        records.esp_list_id,
        case
            when links.esp_list_id is null then 'list_not_linked'
            when records.contact_rank > 1 then 'superseded_record'
            when records.key_rank > 1 then 'duplicate_record'
            when reconciled.esp_member_id is not null then 'reconciled'
            else 'unaccounted'
        end as outcome

    from records
    left join links
        on records.esp_account = links.esp_account
        and records.esp_list_id = links.esp_list_id
    left join reconciled
        on records.esp_account = reconciled.esp_account
        and records.esp_list_id = reconciled.esp_list_id
        and records.esp_member_id = reconciled.esp_member_id

),

outcomes as (

    select esp_account, esp_list_id, outcome, count(*) as row_count
    from record_outcomes
    group by esp_account, esp_list_id, outcome

),

-- read but not loaded (negative: more loaded than read)
lost as (

    select
        extractions.esp_account,
        extractions.esp_list_id,
        'lost' as outcome,
        extractions.members_fetched - coalesce(sum(outcomes.row_count), 0) as row_count

    from extractions
    left join outcomes
        on extractions.esp_account = outcomes.esp_account
        and extractions.esp_list_id = outcomes.esp_list_id
    group by extractions.esp_account, extractions.esp_list_id, extractions.members_fetched

),

final as (

    select
        extractions.run_id,
        cast(extractions.esp_type as {{ dbt.type_string() }}) as source,
        extractions.esp_account,
        extractions.esp_list_id,
        cast('members' as {{ dbt.type_string() }}) as entity,
        counted.outcome,
        cast(counted.row_count as bigint) as row_count,
        cast(extractions.members_fetched as bigint) as rows_read

    from (
        select esp_account, esp_list_id, outcome, row_count from outcomes
        union all
        select esp_account, esp_list_id, outcome, row_count from lost where row_count <> 0
    ) as counted
    inner join extractions
        on counted.esp_account = extractions.esp_account
        and counted.esp_list_id = extractions.esp_list_id

)

select * from final
