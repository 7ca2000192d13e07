-- The reconciliation of every linked CRM list with its ESP list: one row per list link and
-- email key (invalid CRM addresses: one row per contact), with the result, the rule that
-- decided it and the recommended action.
with

links as (

    select * from {{ ref('stg_mailbridge__list_links') }}

),

policy as (

    select transmit_new_members from {{ source('mailbridge', 'policy') }}

),

crm_memberships as (

    select * from {{ ref('int_crm__memberships') }}

),

esp_memberships as (

    select * from {{ ref('int_esp__memberships') }}

),

extractions as (

    select * from {{ ref('int_esp__list_extractions') }}

),

crm_keys as (

    select distinct email_key from {{ ref('stg_crm__contacts') }}
    where email_key is not null

),

blocklist as (

    select distinct email_key from {{ ref('stg_crm__blocklist') }}
    where email_key is not null

),

crm_side as (

    select
        links.list_link_id,
        crm_memberships.*,
        -- several contacts with one key: the lowest contact id speaks for the address
        row_number() over (
            partition by links.list_link_id, coalesce(crm_memberships.email_key, crm_memberships.crm_contact_id)
            order by length(crm_memberships.crm_contact_id), crm_memberships.crm_contact_id
        ) as key_rank

    from links
    inner join crm_memberships on links.crm_list_id = crm_memberships.crm_list_id

),

esp_side as (

    select
        links.list_link_id,
        esp_memberships.*

    from links
    inner join esp_memberships
        on links.esp_account = esp_memberships.esp_account
        and links.esp_list_id = esp_memberships.esp_list_id

),

joined as (

    select
        coalesce(crm_side.list_link_id, esp_side.list_link_id) as list_link_id,
        coalesce(crm_side.email_key, esp_side.email_key) as email_key,
        coalesce(crm_side.email_address, esp_side.email_address) as email_address,
        crm_side.crm_contact_id,
        crm_side.email_error as crm_email_error,
        crm_side.status as crm_status,
        crm_side.status_changed_at as crm_status_changed_at,
        crm_side.status_set_by as crm_status_set_by,
        crm_side.first_name as crm_first_name,
        crm_side.last_name as crm_last_name,
        crm_side.salutation as crm_salutation,
        esp_side.esp_member_id,
        esp_side.email_error as esp_email_error,
        esp_side.status as esp_status,
        esp_side.status_changed_at as esp_status_changed_at,
        esp_side.first_name as esp_first_name,
        esp_side.last_name as esp_last_name,
        esp_side.salutation as esp_salutation,
        crm_side.list_link_id is not null as in_crm,
        esp_side.list_link_id is not null as in_esp

    from (select * from crm_side where key_rank = 1) as crm_side
    full outer join esp_side
        on crm_side.list_link_id = esp_side.list_link_id
        and crm_side.email_key = esp_side.email_key

),

compared as (

    select
        joined.*,
        links.crm_list_id,
        links.esp_account,
        links.esp_list_id,
        coalesce(extractions.is_completed, false) as is_extraction_complete,
        blocklist.email_key is not null as is_blocked,
        crm_keys.email_key is not null as is_known_contact,
        crm_status is distinct from esp_status as status_differs,
        -- a field the ESP does not carry (null there) is not a difference, except names
        case when in_crm and in_esp then concat_ws('; ',
            case when {{ null_safe_differs('crm_first_name', 'esp_first_name') }}
                then concat('first_name (crm: ', coalesce(crm_first_name, ''), ', esp: ', coalesce(esp_first_name, ''), ')') end,
            case when {{ null_safe_differs('crm_last_name', 'esp_last_name') }}
                then concat('last_name (crm: ', coalesce(crm_last_name, ''), ', esp: ', coalesce(esp_last_name, ''), ')') end,
            case when esp_salutation is not null and {{ null_safe_differs('crm_salutation', 'esp_salutation') }}
                then concat('salutation (crm: ', coalesce(crm_salutation, ''), ', esp: ', esp_salutation, ')') end,
            case when crm_status is distinct from esp_status
                then concat('status (crm: ', crm_status, ', esp: ', esp_status, ')') end
        ) else '' end as differences

    from joined
    inner join links on joined.list_link_id = links.list_link_id
    left join extractions
        on links.esp_account = extractions.esp_account
        and links.esp_list_id = extractions.esp_list_id
    left join blocklist on joined.email_key = blocklist.email_key
    left join crm_keys on joined.email_key = crm_keys.email_key

),

decided as (

    select
        compared.*,
        case
            when not is_extraction_complete then 'extraction_incomplete'
            when email_key is null then 'invalid_address'
            when is_blocked then 'blocklisted'
            when in_crm and in_esp and differences = '' then 'both_agree'
            when in_crm and in_esp then 'data_differ'
            when in_esp and esp_status = 'archived' then 'archived_at_esp_only'
            when in_esp and is_known_contact then 'esp_member_crm_contact'
            when in_esp then 'esp_member_unknown_to_crm'
            when crm_status = 'subscribed' then 'crm_subscribed_unknown_to_esp'
            else 'crm_not_subscribed_unknown_to_esp'
        end as rule

    from compared

),

final as (

    select
        ---------- ids
        {{ dbt.hash("concat(list_link_id, '|', coalesce(email_key, concat('contact:', crm_contact_id)))") }}
            as reconciliation_id,
        list_link_id,
        esp_account,
        esp_list_id,
        crm_list_id,
        email_key,
        email_address,
        crm_contact_id,
        esp_member_id,

        ---------- result
        case rule
            when 'extraction_incomplete' then 'aborted'
            when 'invalid_address' then 'invalid_email'
            when 'blocklisted' then 'blocked'
            when 'both_agree' then 'in_sync'
            when 'data_differ' then 'conflict'
            when 'archived_at_esp_only' then 'in_sync'
            when 'esp_member_crm_contact' then 'new_in_list'
            when 'esp_member_unknown_to_crm' then 'new_contact'
            when 'crm_subscribed_unknown_to_esp' then 'not_in_esp'
            when 'crm_not_subscribed_unknown_to_esp' then 'in_sync'
        end as result,
        rule,
        nullif(differences, '') as conflict_fields,
        coalesce(crm_email_error, esp_email_error) as email_error,

        ---------- both sides
        crm_status,
        crm_status_changed_at,
        crm_status_set_by,
        esp_status,
        esp_status_changed_at,

        ---------- what to do
        case rule
            when 'extraction_incomplete' then 'none'
            when 'invalid_address' then 'none'
            when 'blocklisted' then case when esp_status in ('subscribed', 'pending') then 'unsubscribe' else 'none' end
            when 'both_agree' then 'none'
            when 'data_differ' then 'await_decision'
            when 'archived_at_esp_only' then 'none'
            when 'esp_member_crm_contact' then 'create_assignment'
            when 'esp_member_unknown_to_crm' then 'create_contact'
            when 'crm_subscribed_unknown_to_esp' then
                case when (select transmit_new_members from policy) then 'transmit' else 'await_decision' end
            else 'none'
        end as recommended_action,

        ---------- run
        cast('{{ var("run_id") }}' as {{ dbt.type_string() }}) as run_id,
        {{ dbt.current_timestamp() }} as reconciled_at

    from decided

)

select * from final
