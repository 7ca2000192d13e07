-- Where each CRM row the latest extraction read went: one row per run, CRM table and outcome,
-- with the number of rows. A row kept out at extraction is in raw_crm.rejected_rows and the
-- event log; a loaded row reaches the reconciliation, or the event log, or is out of scope
-- for a reason named here. `lost` (read but neither loaded nor kept out) and `unaccounted`
-- (loaded, but no mart and no event has it) are what the test every_crm_row_is_accounted_for
-- refuses: rows read = rows accounted, per table and sync.
with

extractions as (

    select * from {{ ref('stg_crm__extractions') }}

),

latest_run as (

    select run_id
    from extractions
    order by finished_at desc
    limit 1

),

read_counts as (

    select extractions.run_id, extractions.entity, extractions.rows_read
    from extractions
    inner join latest_run on extractions.run_id = latest_run.run_id

),

contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

assignments as (

    select * from {{ ref('stg_crm__assignments') }}

),

linked_lists as (

    select distinct crm_list_id from {{ ref('stg_mailbridge__list_links') }}

),

reconciliation as (

    select * from {{ ref('fct_list_reconciliation') }}

),

-- the contacts each CRM list's reconciliation speaks of: the contact of a row, the one whose
-- status is its consent, and every contact with the row's address or its former one
-- (duplicates included)
reconciled_memberships as (

    select crm_list_id, crm_contact_id from reconciliation where crm_contact_id is not null
    union
    select crm_list_id, crm_consent_contact_id from reconciliation where crm_consent_contact_id is not null
    union
    select reconciliation.crm_list_id, contacts.crm_contact_id
    from reconciliation
    inner join contacts on reconciliation.email_key = contacts.email_key
    union
    -- an address changed at the ESP is one row under the ESP's new key: the CRM's contacts
    -- still hold the former one (a duplicate among them too)
    select reconciliation.crm_list_id, contacts.crm_contact_id
    from reconciliation
    inner join contacts on reconciliation.former_email_key = contacts.email_key

),

reconciled_contacts as (

    select distinct crm_contact_id from reconciled_memberships

),

on_linked_lists as (

    select distinct assignments.crm_contact_id
    from assignments
    inner join linked_lists on assignments.crm_list_id = linked_lists.crm_list_id

),

unknown_contact_events as (

    select distinct links.crm_list_id, events.crm_contact_id
    from {{ ref('fct_sync_event_log') }} as events
    inner join {{ ref('stg_mailbridge__list_links') }} as links on events.list_link_id = links.list_link_id
    where events.code = 'crm_assignment_unknown_contact'
        and events.run_id = {{ run_id() }}

),

rejected as (

    select entity, 'rejected' as outcome, count(distinct row_number) as row_count
    from {{ ref('stg_crm__rejected_rows') }}
    where not row_kept
    group by entity

),

contact_outcomes as (

    select
        'contacts' as entity,
        case
            when reconciled_contacts.crm_contact_id is not null then 'reconciled'
            when on_linked_lists.crm_contact_id is null then 'not_on_a_linked_list'
            else 'unaccounted'
        end as outcome

    from contacts
    left join reconciled_contacts on contacts.crm_contact_id = reconciled_contacts.crm_contact_id
    left join on_linked_lists on contacts.crm_contact_id = on_linked_lists.crm_contact_id

),

list_outcomes as (

    select
        'lists' as entity,
        case when linked_lists.crm_list_id is not null then 'linked' else 'not_linked' end as outcome

    from {{ ref('stg_crm__lists') }} as lists
    left join linked_lists on lists.crm_list_id = linked_lists.crm_list_id

),

assignment_outcomes as (

    select
        'assignments' as entity,
        case
            when linked_lists.crm_list_id is null then 'list_not_linked'
            when contacts.crm_contact_id is null and unknown_contact_events.crm_contact_id is not null
                then 'unknown_contact'
            when reconciled_memberships.crm_contact_id is not null then 'reconciled'
            else 'unaccounted'
        end as outcome

    from assignments
    left join linked_lists on assignments.crm_list_id = linked_lists.crm_list_id
    left join contacts on assignments.crm_contact_id = contacts.crm_contact_id
    left join unknown_contact_events
        on assignments.crm_list_id = unknown_contact_events.crm_list_id
        and assignments.crm_contact_id = unknown_contact_events.crm_contact_id
    left join reconciled_memberships
        on assignments.crm_list_id = reconciled_memberships.crm_list_id
        and assignments.crm_contact_id = reconciled_memberships.crm_contact_id

),

blocklist_outcomes as (

    select
        'blocklist' as entity,
        case
            when email_key is not null or blocked_domain is not null then 'enforced'
            else 'unaccounted'
        end as outcome

    from {{ ref('stg_crm__blocklist') }}

),

history_outcomes as (

    select
        'email_history' as entity,
        case
            when contacts.crm_contact_id is null then 'contact_not_in_crm'
            when history.email_key is null then 'invalid_former_address'
            when history.email_key = contacts.email_key then 'current_address'
            when former.crm_contact_id is not null then 'address_history'
            else 'unaccounted'
        end as outcome

    from {{ ref('stg_crm__email_history') }} as history
    left join contacts on history.crm_contact_id = contacts.crm_contact_id
    left join {{ ref('int_crm__address_history') }} as former
        on history.crm_contact_id = former.crm_contact_id
        and history.email_key = former.former_email_key

),

loaded as (

    select entity, outcome from contact_outcomes
    union all
    select entity, outcome from list_outcomes
    union all
    select entity, outcome from assignment_outcomes
    union all
    select entity, outcome from blocklist_outcomes
    union all
    select entity, outcome from history_outcomes

),

outcomes as (

    select entity, outcome, count(*) as row_count
    from loaded
    group by entity, outcome

    union all

    select entity, outcome, row_count from rejected

),

-- read but neither loaded nor kept out (negative: counted twice)
lost as (

    select
        read_counts.entity,
        'lost' as outcome,
        read_counts.rows_read - coalesce(sum(outcomes.row_count), 0) as row_count

    from read_counts
    left join outcomes on read_counts.entity = outcomes.entity
    group by read_counts.entity, read_counts.rows_read

),

final as (

    select
        read_counts.run_id,
        cast('crm' as {{ dbt.type_string() }}) as source,
        counted.entity,
        counted.outcome,
        cast(counted.row_count as bigint) as row_count,
        cast(read_counts.rows_read as bigint) as rows_read

    from (
        select entity, outcome, row_count from outcomes
        union all
        select entity, outcome, row_count from lost where row_count <> 0
    ) as counted
    inner join read_counts on counted.entity = read_counts.entity

)

select * from final
