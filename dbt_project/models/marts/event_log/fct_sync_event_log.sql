{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        full_refresh=false,
    )
}}
-- What happened to each address, run after run: one row per reconciliation result that is not
-- in_sync, per warning or note, per CRM value or row the extraction could not read, per contact
-- and list whose CRM assignment rows disagree, per assignment of a contact the CRM does not
-- have, per list whose extraction broke off, per other ESP read that broke off (a campaign's
-- report, say), per queued action refused or stale, per push attempt, per campaign send and per
-- membership subscribed at the ESP whose consent the ledger cannot prove.
-- Appended every run; a rerun of one run id replaces that run's rows. event_id hashes every part
-- of the event's natural key (event_key where the other columns do not hold it all), and the
-- merge never keeps two rows with one id: see `final`.
with

reconciliation as (

    select * from {{ ref('fct_list_reconciliation') }}

),

result_events as (

    select
        run_id,
        reconciled_at as logged_at,
        case
            when result in ('invalid_email', 'aborted') then 'error'
            when result in ('conflict', 'blocked', 'email_changed') then 'warning'
            else 'info'
        end as severity,
        result as code,
        concat(
            result, ' (rule ', rule, '): recommended ', recommended_action,
            case when conflict_fields is not null then concat('; differs: ', conflict_fields) else '' end
        ) as message,
        list_link_id,
        email_key,
        crm_contact_id,
        concat_ws('; ',
            concat('crm_status=', coalesce(crm_status, '-')),
            concat('esp_status=', coalesce(esp_status, '-')),
            concat('resolved_status=', coalesce(resolved_status, '-')),
            case when former_email_key is not null then concat('former_email_key=', former_email_key) end,
            case when email_error is not null then concat('email_error=', email_error) end,
            concat('email_address=', coalesce(email_address, '-'))
        ) as detail,
        reconciliation_id as event_key

    from reconciliation
    where result <> 'in_sync'

),

note_events as (

    select
        run_id,
        reconciled_at as logged_at,
        case when duplicate_note like 'duplicate_contacts_undecided%' then 'warning' else 'info' end as severity,
        {{ dbt.split_part('duplicate_note', "':'", 1) }} as code,
        duplicate_note as message,
        list_link_id,
        email_key,
        crm_contact_id,
        concat('result=', result) as detail,
        reconciliation_id as event_key

    from reconciliation
    where duplicate_note is not null

    union all

    select
        run_id,
        reconciled_at as logged_at,
        'warning' as severity,
        'esp_duplicate_records' as code,
        warnings as message,
        list_link_id,
        email_key,
        crm_contact_id,
        concat('result=', result) as detail,
        reconciliation_id as event_key

    from reconciliation
    where warnings like '%esp_duplicate_records%'

),

-- this run, whether or not the reconciliation has rows
run as (

    select
        cast({{ run_id() }} as {{ dbt.type_string() }}) as run_id,
        {{ dbt.current_timestamp() }} as reconciled_at

),

rejected_events as (

    select
        run.run_id,
        run.reconciled_at as logged_at,
        'error' as severity,
        'crm_row_rejected' as code,
        concat(
            'CRM ', rejected.entity, ' row ', rejected.row_key,
            ' (row ', cast(rejected.row_number as {{ dbt.type_string() }}), ' read), field ', rejected.field,
            ': ', rejected.reason
        ) as message,
        cast(null as {{ dbt.type_string() }}) as list_link_id,
        cast(null as {{ dbt.type_string() }}) as email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        concat_ws('; ',
            concat('row_key=', rejected.row_key),
            concat(rejected.field, '=', coalesce(rejected.value, '-'))
        ) as detail,
        -- two rows without a key, or with one key twice, differ only in their place in the read
        concat(rejected.entity, '/', cast(rejected.row_number as {{ dbt.type_string() }}), '/', rejected.field)
            as event_key

    from {{ ref('stg_crm__rejected_rows') }} as rejected
    cross join run

),

assignment_events as (

    select
        run.run_id,
        run.reconciled_at as logged_at,
        'warning' as severity,
        'conflicting_assignments' as code,
        concat(
            'CRM contact ', memberships.crm_contact_id, ' has ',
            cast(memberships.assignment_rows as {{ dbt.type_string() }}),
            ' differing assignment rows for list ', memberships.crm_list_id, '; ',
            case when memberships.status = 'subscribed' then 'the newest subscribe ' else 'the opt-out ' end,
            coalesce(memberships.crm_status_value, '-'), ' (', memberships.status, ') is taken'
        ) as message,
        links.list_link_id,
        memberships.email_key,
        memberships.crm_contact_id,
        memberships.conflicting_assignments as detail,
        concat(memberships.crm_list_id, '/', memberships.crm_contact_id) as event_key

    from {{ ref('int_crm__memberships') }} as memberships
    left join {{ ref('stg_mailbridge__list_links') }} as links on memberships.crm_list_id = links.crm_list_id
    cross join run
    where memberships.conflicting_assignments is not null

),

-- assignments of a contact the CRM contacts table does not have: no address to reconcile
orphaned_values as (

    select distinct
        assignments.crm_contact_id,
        assignments.crm_list_id,
        concat(
            coalesce(assignments.crm_status_value, '-'), ' (', assignments.status, ')',
            ' since ', coalesce(cast(assignments.status_changed_at as {{ dbt.type_string() }}), 'unknown'),
            ' by ', coalesce(assignments.status_set_by, '-'),
            ', task ', coalesce(assignments.crm_task, '-')
        ) as assignment_values,
        case
            when assignments.status not in ('subscribed', 'bounced_soft', 'pending') then assignments.crm_status_value
        end as opt_out_value

    from {{ ref('stg_crm__assignments') }} as assignments
    left join {{ ref('stg_crm__contacts') }} as contacts on assignments.crm_contact_id = contacts.crm_contact_id
    where contacts.crm_contact_id is null

),

orphaned_assignments as (

    select
        orphaned_values.crm_contact_id,
        orphaned_values.crm_list_id,
        rows_per_pair.assignment_rows,
        max(orphaned_values.opt_out_value) as opt_out_value,
        {{ dbt.listagg('orphaned_values.assignment_values', "' | '", 'order by orphaned_values.assignment_values') }}
            as assignment_values

    from orphaned_values
    inner join (
        select crm_contact_id, crm_list_id, count(*) as assignment_rows
        from {{ ref('stg_crm__assignments') }}
        group by crm_contact_id, crm_list_id
    ) as rows_per_pair
        on orphaned_values.crm_contact_id = rows_per_pair.crm_contact_id
        and orphaned_values.crm_list_id = rows_per_pair.crm_list_id
    group by orphaned_values.crm_contact_id, orphaned_values.crm_list_id, rows_per_pair.assignment_rows

),

unknown_contact_events as (

    select
        run.run_id,
        run.reconciled_at as logged_at,
        'error' as severity,
        'crm_assignment_unknown_contact' as code,
        concat(
            'CRM contact ', orphans.crm_contact_id, ' is assigned to list ', orphans.crm_list_id,
            ' but the CRM has no such contact: the assignment is not reconciled',
            case
                when orphans.opt_out_value is not null
                    then concat(', and its opt-out (', orphans.opt_out_value, ') reaches no ESP')
                else ''
            end
        ) as message,
        links.list_link_id,
        cast(null as {{ dbt.type_string() }}) as email_key,
        orphans.crm_contact_id,
        concat(
            cast(orphans.assignment_rows as {{ dbt.type_string() }}),
            case when orphans.assignment_rows = 1 then ' assignment row: ' else ' assignment rows: ' end,
            orphans.assignment_values
        ) as detail,
        concat(orphans.crm_list_id, '/', orphans.crm_contact_id) as event_key

    from orphaned_assignments as orphans
    -- an assignment to a list no link names is out of scope (fct_crm_row_accounting counts it)
    inner join {{ ref('stg_mailbridge__list_links') }} as links on orphans.crm_list_id = links.crm_list_id
    cross join run

),

aborted_events as (

    select
        run.run_id,
        run.reconciled_at as logged_at,
        'error' as severity,
        'list_extraction_incomplete' as code,
        concat('the latest read of ', extractions.esp_account, ' list ', extractions.esp_list_id,
               ' did not complete; nothing is pushed for it') as message,
        links.list_link_id,
        cast(null as {{ dbt.type_string() }}) as email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        coalesce(extractions.error_message, '') as detail,
        concat(extractions.esp_account, '/', extractions.esp_list_id) as event_key

    from {{ ref('int_esp__list_extractions') }} as extractions
    inner join {{ ref('stg_mailbridge__list_links') }} as links
        on extractions.esp_account = links.esp_account
        and extractions.esp_list_id = links.esp_list_id
    cross join run
    where not extractions.is_completed

),

-- a read of an ESP resource (lists, campaigns, a campaign's reports) that broke off: the rest
-- of the extraction and the reconciliation went on, and the next run reads it again
read_failure_events as (

    select
        run.run_id,
        run.reconciled_at as logged_at,
        'warning' as severity,
        'esp_read_failed' as code,
        concat('the latest read of ', reads.resource,
               case when reads.campaign_id is not null then concat(' of campaign ', reads.campaign_id) else '' end,
               ' at ', reads.esp_account, ' did not complete; it is read again next run') as message,
        cast(null as {{ dbt.type_string() }}) as list_link_id,
        cast(null as {{ dbt.type_string() }}) as email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        concat_ws('; ',
            concat('esp_account=', reads.esp_account),
            concat('resource=', reads.resource),
            concat('campaign_id=', coalesce(reads.campaign_id, '-')),
            concat('failed_in_run=', reads.run_id),
            concat('error=', coalesce(reads.error_message, '-'))
        ) as detail,
        concat(reads.esp_account, '/', reads.resource, '/', coalesce(reads.campaign_id, '-')) as event_key

    from {{ ref('int_esp__resource_extractions') }} as reads
    inner join {{ ref('stg_mailbridge__esp_accounts') }} as accounts on reads.esp_account = accounts.esp_account
    cross join run
    where not reads.is_completed

),

-- a membership subscribed at the ESP that no consent event with a time and a channel accounts
-- for (fct_consent_ledger): consent it cannot prove
consent_events as (

    select
        run.run_id,
        run.reconciled_at as logged_at,
        'warning' as severity,
        'consent_unproven' as code,
        'subscribed at the ESP, but no consent event with a time and a channel accounts for it' as message,
        links.list_link_id,
        memberships.email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        concat_ws('; ',
            concat('esp_account=', memberships.esp_account),
            concat('esp_list_id=', memberships.esp_list_id)
        ) as detail,
        cast(null as {{ dbt.type_string() }}) as event_key

    from {{ ref('int_esp__memberships') }} as memberships
    inner join {{ ref('stg_mailbridge__list_links') }} as links
        on memberships.esp_account = links.esp_account
        and memberships.esp_list_id = links.esp_list_id
    cross join run
    where memberships.status = 'subscribed'
        and memberships.email_key is not null
        and not exists (
            select 1 from {{ ref('fct_consent_ledger') }} as ledger
            where ledger.list_link_id = links.list_link_id
                and ledger.email_key = memberships.email_key
                and ledger.consent = 'given'
                and ledger.event_at is not null
                and ledger.channel is not null
        )

),

pushback_events as (

    select
        outbox.run_id,
        outbox.updated_at as logged_at,
        case
            when outbox.status = 'rejected' then 'error'
            when outbox.status in ('failed', 'stale') then 'warning'
            else 'info'
        end as severity,
        concat('pushback_', outbox.status) as code,
        concat(outbox.payload_summary, ' → ', outbox.status,
               case when outbox.error_message is not null then concat(': ', outbox.error_message) else '' end)
            as message,
        outbox.list_link_id,
        outbox.email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        concat_ws('; ', concat('attempt_id=', outbox.attempt_id), concat('action_id=', outbox.action_id),
                  concat('target=', outbox.target), concat('error_code=', coalesce(outbox.error_code, '-')))
            as detail,
        cast(null as {{ dbt.type_string() }}) as event_key

    from {{ source('ops', 'pushback_outbox') }} as outbox
    where outbox.status <> 'planned'

),

queue_events as (

    select
        queue.run_id,
        {{ dbt.current_timestamp() }} as logged_at,
        'warning' as severity,
        concat('queue_', queue.queue_status) as code,
        concat(queue.action, ' from ', queue.action_source, ' ', queue.queue_status, ': ', queue.queue_reason)
            as message,
        queue.list_link_id,
        queue.email_key,
        queue.crm_contact_id,
        concat_ws('; ', concat('action_id=', queue.action_id), concat('decided_by=', coalesce(queue.decided_by, '-')))
            as detail,
        cast(null as {{ dbt.type_string() }}) as event_key

    from {{ ref('fct_pushback_queue') }} as queue
    where queue.queue_status in ('refused', 'stale')

),

send_events as (

    select
        sends.send_id as run_id,
        sends.decided_at as logged_at,
        case when sends.outcome = 'refused' then 'warning' else 'info' end as severity,
        concat('campaign_', sends.outcome) as code,
        concat('campaign ', sends.campaign_id, ' ', sends.outcome,
               case when sends.reasons is not null then concat(': ', sends.reasons) else '' end) as message,
        sends.list_link_id,
        cast(null as {{ dbt.type_string() }}) as email_key,
        cast(null as {{ dbt.type_string() }}) as crm_contact_id,
        concat('esp_account=', sends.esp_account, '; esp_list_id=', coalesce(sends.esp_list_id, '-')) as detail,
        cast(null as {{ dbt.type_string() }}) as event_key

    from {{ source('ops', 'campaign_sends') }} as sends

),

unioned as (

    select * from result_events
    union all
    select * from send_events
    union all
    select * from queue_events
    union all
    select * from pushback_events
    union all
    select * from note_events
    union all
    select * from rejected_events
    union all
    select * from aborted_events
    union all
    select * from read_failure_events
    union all
    select * from assignment_events
    union all
    select * from unknown_contact_events
    union all
    select * from consent_events

),

keyed as (

    select
        {{ dbt.hash("concat(run_id, '|', code, '|', coalesce(list_link_id, ''), '|', coalesce(email_key, ''), '|', coalesce(crm_contact_id, ''), '|', coalesce(detail, ''), case when event_key is null then '' else concat('|', event_key) end)") }}
            as event_id,
        run_id,
        logged_at,
        severity,
        code,
        message,
        list_link_id,
        email_key,
        crm_contact_id,
        detail

    from unioned

),

{% set event_columns = 'event_id, run_id, logged_at, severity, code, message, list_link_id, email_key, crm_contact_id, detail' %}

-- the merge never keeps two rows with one id, so the log never fails its own unique test:
-- an event twice is one row, and a different event under a taken id gets an id of its own.
-- Rows an earlier build left sharing an id are taken in again, and the merge replaces them.
candidates as (

    select distinct {{ event_columns }} from keyed
    {% if is_incremental() %}
    union
    select {{ event_columns }} from {{ this }}
    where event_id in (select event_id from {{ this }} group by event_id having count(*) > 1)
        and event_id not in (select event_id from keyed)
    {% endif %}

),

numbered as (

    select
        *,
        row_number() over (
            partition by event_id
            order by logged_at, code, message, list_link_id, email_key, crm_contact_id, detail, severity, run_id
        ) as id_rank

    from candidates

),

final as (

    select
        case
            when id_rank = 1 then event_id
            else {{ dbt.hash("concat(event_id, '#', cast(id_rank as " ~ dbt.type_string() ~ "))") }}
        end as event_id,
        run_id,
        logged_at,
        severity,
        code,
        message,
        list_link_id,
        email_key,
        crm_contact_id,
        detail

    from numbered

)

select * from final
