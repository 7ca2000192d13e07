-- The push-back queue: one row per list link and email key that has an action, with where
-- the action comes from (a manual decision, the CRM's task column, or the policy) and
-- whether it may run. A manual decision made on another state than today's is stale: it
-- stays in the queue, reported, and is not executed.
with

reconciliation as (

    select * from {{ ref('fct_list_reconciliation') }}

),

executed as (

    select action_id from {{ source('ops', 'pushback_outbox') }}
    where status in ('sent', 'confirmed')

),

-- a decision holds until it is executed: then the action made from it is in the outbox
decisions as (

    select
        *,
        row_number() over (partition by list_link_id, email_key order by decided_at desc, decision_id) as recency

    from {{ source('ops', 'decisions') }}
    where {{ dbt.hash("concat_ws('|', list_link_id, email_key, action, state_fingerprint)") }}
        not in (select action_id from executed)

),

refusals as (

    select * from {{ ref('int_pushback__refusals') }}

),

task_values as (

    select * from {{ source('mailbridge', 'crm_task_values') }}

),

candidates as (

    select
        reconciliation.*,
        decisions.decision_id,
        decisions.action as decided_action,
        decisions.decided_by,
        decisions.decided_at,
        decisions.state_fingerprint as decided_on_fingerprint,
        task_values.action as task_action

    from reconciliation
    left join decisions
        on reconciliation.list_link_id = decisions.list_link_id
        and reconciliation.email_key = decisions.email_key
        and decisions.recency = 1
    left join task_values on reconciliation.crm_task = task_values.crm_value

),

chosen as (

    select
        *,
        case
            when decision_id is not null then 'manual'
            when task_action is not null then 'crm_task'
            when recommended_action not in ('none', 'await_decision') then 'policy'
        end as action_source,
        case
            when decision_id is not null then decided_action
            when task_action is not null then task_action
            when recommended_action not in ('none', 'await_decision') then recommended_action
        end as action

    from candidates

),

-- the compliance rules: the first refusal that applies to the action in this state
refused as (

    select
        chosen.reconciliation_id,
        refusals.reason as refusal_reason,
        row_number() over (partition by chosen.reconciliation_id order by refusals.priority) as refusal_rank

    from chosen
    inner join refusals
        on chosen.action = refusals.action
        and (
            (refusals.refused_field = 'result' and chosen.result = refusals.refused_value)
            or (refusals.refused_field = 'esp_status' and chosen.esp_status = refusals.refused_value)
        )

),

checked as (

    select
        chosen.*,
        refused.refusal_reason,
        case
            when chosen.action_source = 'manual' and chosen.decided_on_fingerprint <> chosen.state_fingerprint
                then 'stale'
            when chosen.result = 'aborted' then 'held'
            when refused.refusal_reason is not null then 'refused'
            else 'ready'
        end as queue_status

    from chosen
    left join refused
        on chosen.reconciliation_id = refused.reconciliation_id
        and refused.refusal_rank = 1
    where chosen.action is not null

),

final as (

    select
        {{ dbt.hash("concat_ws('|', list_link_id, coalesce(email_key, crm_contact_id), action, state_fingerprint)") }}
            as action_id,
        list_link_id,
        esp_account,
        esp_list_id,
        crm_list_id,
        email_key,
        email_address,
        former_email_key,
        crm_contact_id,
        esp_member_id,
        action,
        case
            when action in ('transmit', 'start_doi', 'unsubscribe', 'update_fields', 'delete', 'delete_permanent',
                            'change_address_doi', 'change_address_transmit') then 'esp'
            else 'crm'
        end as target,
        action_source,
        decision_id,
        decided_by,
        queue_status,
        case queue_status
            when 'stale' then 'the decision was made on another state: decide again'
            when 'held' then 'the list''s latest extraction did not complete'
            when 'refused' then refusal_reason
        end as queue_reason,
        result,
        rule,
        crm_status,
        esp_status,
        resolved_status,
        state_fingerprint,
        run_id

    from checked

)

select * from final
