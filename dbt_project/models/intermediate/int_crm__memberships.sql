-- CRM list assignments with their contact's address and fields, one row per contact and list.
with

assignments as (

    select * from {{ ref('stg_crm__assignments') }}

),

contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

final as (

    select
        assignments.crm_list_id,
        assignments.crm_contact_id,
        contacts.email_address,
        contacts.email_key,
        contacts.email_error,
        assignments.status,
        assignments.crm_status_value,
        assignments.status_changed_at,
        assignments.status_set_by,
        assignments.crm_task,
        contacts.first_name,
        contacts.last_name,
        contacts.salutation,
        contacts.custom_fields

    from assignments
    inner join contacts on assignments.crm_contact_id = contacts.crm_contact_id

)

select * from final
