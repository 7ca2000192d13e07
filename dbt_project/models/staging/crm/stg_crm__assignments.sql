-- CRM list assignments; statuses were mapped to the canonical vocabulary at extraction
-- (crm.status_values in mailbridge.yaml), the CRM's own word is kept beside them. One row per
-- CRM row: a CRM table without a unique key can hold a contact and list twice, and
-- int_crm__memberships decides between them (the opt-out wins) and reports it.
with

source as (

    select * from {{ source('crm', 'assignments') }}

),

renamed as (

    select
        ---------- ids
        contact_id as crm_contact_id,
        list_id as crm_list_id,

        ---------- status
        status,
        crm_status_value,
        status_set_by,
        nullif(trim(task), '') as crm_task,

        ---------- timestamps
        status_changed_at

    from source

)

select * from renamed
