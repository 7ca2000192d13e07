-- CRM list assignments with their contact's address and fields, one row per contact and list.
-- A CRM table without a unique key can hold several rows for one contact and list; the opt-out
-- wins: any status other than subscribed beats subscribed, among opt-outs the newest status time
-- (an unknown time first: it cannot be shown older), among subscribes the newest. When the rows
-- differ, conflicting_assignments lists them all for the event log.
with

assignments as (

    select * from {{ ref('stg_crm__assignments') }}

),

contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

described as (

    select
        *,
        concat(
            coalesce(crm_status_value, '-'), ' (', status, ')',
            ' since ', coalesce(cast(status_changed_at as {{ dbt.type_string() }}), 'unknown'),
            ' by ', coalesce(status_set_by, '-'),
            ', task ', coalesce(crm_task, '-')
        ) as assignment_values

    from assignments

),

ranked as (

    select
        *,
        count(*) over (partition by crm_contact_id, crm_list_id) as assignment_rows,
        row_number() over (
            partition by crm_contact_id, crm_list_id
            order by
                case when status = 'subscribed' then 1 else 0 end,
                case when status <> 'subscribed' and status_changed_at is null then 0 else 1 end,
                status_changed_at desc nulls last,
                assignment_values
        ) as assignment_rank

    from described

),

conflicts as (

    select
        crm_contact_id,
        crm_list_id,
        {{ dbt.listagg('assignment_values', "' | '", 'order by assignment_rank') }} as conflicting_assignments

    from ranked
    where assignment_rows > 1
    group by crm_contact_id, crm_list_id
    having count(distinct assignment_values) > 1

),

final as (

    select
        ranked.crm_list_id,
        ranked.crm_contact_id,
        contacts.email_address,
        contacts.email_key,
        contacts.email_error,
        ranked.status,
        ranked.crm_status_value,
        ranked.status_changed_at,
        ranked.status_set_by,
        ranked.crm_task,
        contacts.first_name,
        contacts.last_name,
        contacts.salutation,
        contacts.custom_fields,
        ranked.assignment_rows,
        conflicts.conflicting_assignments

    from ranked
    inner join contacts on ranked.crm_contact_id = contacts.crm_contact_id
    left join conflicts
        on ranked.crm_contact_id = conflicts.crm_contact_id
        and ranked.crm_list_id = conflicts.crm_list_id
    where ranked.assignment_rank = 1

)

select * from final
