-- The push-back queue: one row per list link, email key and action, with where the action
-- comes from (a manual decision, the CRM's task column, or the policy) and whether it may
-- run. A decision or task word replaces the policy's action, except a compliance action,
-- which it can only join. A manual decision made on another state than today's is stale:
-- it stays in the queue, reported, and is not executed. A manual unsubscribe never goes stale:
-- an opt-out is carried out on today's state, whatever changed since it was decided.
with

reconciliation as (

    select * from {{ ref('fct_list_reconciliation') }}

),

executed as (

    select action_id, list_link_id, email_key, action, attempted_at from {{ source('ops', 'pushback_outbox') }}
    where status in ('sent', 'confirmed')

),

-- the latest decision for an address replaces every earlier one, for good; it holds until it
-- is executed (the action made from it is in the outbox). Ranked before the executed ones are
-- left out: an earlier decision must not come back once the latest has run
ranked_decisions as (

    select
        *,
        row_number() over (partition by list_link_id, email_key order by decided_at desc, decision_id) as recency

    from {{ source('ops', 'decisions') }}

),

decisions as (

    select * from ranked_decisions
    where recency = 1
        and closed_at is null
        and {{ dbt.hash("concat_ws('|', list_link_id, email_key, action, state_fingerprint)") }}
            not in (select action_id from executed)
        -- an unsubscribe runs on the state of its push, not the one it was decided on: it is done
        -- once an unsubscribe of the address was sent after it was decided, or once neither side
        -- has the address subscribed (an address change's unsubscribe of the former address
        -- carried it out; the next push closes it for good)
        and not (
            action = 'unsubscribe'
            and (
                exists (
                    select 1 from executed
                    where executed.list_link_id = ranked_decisions.list_link_id
                        and executed.email_key = ranked_decisions.email_key
                        and executed.action = 'unsubscribe'
                        and executed.attempted_at >= ranked_decisions.decided_at
                )
                or exists (
                    select 1 from reconciliation
                    where reconciliation.list_link_id = ranked_decisions.list_link_id
                        and reconciliation.email_key = ranked_decisions.email_key
                        and reconciliation.is_opted_out_on_both_sides
                )
            )
        )

),

refusals as (

    select * from {{ ref('int_pushback__refusals') }}

),

task_values as (

    select * from {{ source('mailbridge', 'crm_task_values') }}

),

-- a task word whose action was sent, or was rejected for good (refused by the compliance
-- rules, or refused by the side it writes), is done, even while its word is still in the CRM
-- (a push killed before it cleared it): it is not run again, the next push clears it
executed_tasks as (

    select distinct list_link_id, email_key, crm_task
    from {{ source('ops', 'pushback_outbox') }}
    where crm_task is not null and task_cleared_at is null
        and status in ('sent', 'confirmed', 'rejected')

),

candidates as (

    select
        reconciliation.*,
        decisions.decision_id,
        decisions.action as decided_action,
        decisions.decided_by,
        decisions.decided_at,
        decisions.note as decision_note,
        decisions.state_fingerprint as decided_on_fingerprint,
        case when executed_tasks.crm_task is null then task_values.action end as task_action

    from reconciliation
    left join decisions
        on reconciliation.list_link_id = decisions.list_link_id
        and reconciliation.email_key = decisions.email_key
        and decisions.recency = 1
    left join task_values on reconciliation.crm_task = task_values.crm_value
    left join executed_tasks
        on reconciliation.list_link_id = executed_tasks.list_link_id
        and reconciliation.email_key = executed_tasks.email_key
        and reconciliation.crm_task = executed_tasks.crm_task
    -- only an address something is asked for can be in the queue: a decision, a task word, the
    -- policy's action or a status that moved with an address change (most addresses are in
    -- sync and ask for nothing; the CTEs below would carry each of them several times)
    where decisions.decision_id is not null
        or (executed_tasks.crm_task is null and task_values.action is not null)
        or reconciliation.recommended_action not in ('none', 'await_decision')
        or reconciliation.status_action is not null

),

-- the action asked for: a manual decision, else the CRM's task word, else the policy. A
-- decision answers the task word beside it (the word is cleared when the decision's action is
-- written), except a word asking for an unsubscribe: the opt-out wins, and the decision, made
-- on a state the unsubscribe changes, goes stale
chosen as (

    select
        *,
        case
            when task_action = 'unsubscribe' and coalesce(decided_action, '') <> 'unsubscribe' then 'crm_task'
            when decision_id is not null then 'manual'
            when task_action is not null then 'crm_task'
            when recommended_action not in ('none', 'await_decision') then 'policy'
        end as action_source,
        case
            when task_action = 'unsubscribe' and coalesce(decided_action, '') <> 'unsubscribe' then task_action
            when decision_id is not null then decided_action
            when task_action is not null then task_action
            when recommended_action not in ('none', 'await_decision') then recommended_action
        end as action

    from candidates

),

-- compliance actions: an opt-out or blocklist unsubscribe at the ESP, and the CRM taking an
-- ESP opt-out or hard bounce. A decision or a task word can join them, never replace them.
-- Nor the CRM taking an address changed at the ESP: that says who the person is, not what
-- to do with them.
compliance as (

    select
        *,
        recommended_action in ('unsubscribe', 'update_crm_email')
            or (
                recommended_action in ('set_status', 'mark_bounced')
                and resolved_status in ('unsubscribed', 'bounced_hard', 'bounced')
            ) as is_compliance

    from candidates

),

requested as (

    -- what was asked for
    select
        reconciliation_id, action, action_source, decision_id, decided_by, decided_at, decision_note,
        decided_on_fingerprint, cast(null as {{ dbt.type_string() }}) as crm_target_status,
        cast(null as {{ dbt.type_string() }}) as parent_action,
        case action_source when 'manual' then 1 when 'crm_task' then 2 else 3 end as precedence
    from chosen
    where action is not null

    union all

    -- the policy's own action: it still runs when the request that replaces it is refused (a
    -- refused request changes nothing) or writes the other side
    {{ policy_request('recommended_action', 5) }}
    from chosen
    where action_source in ('manual', 'crm_task')
        and recommended_action not in ('none', 'await_decision')
        and recommended_action <> action

    union all

    -- the policy's compliance action, whatever else was asked for
    {{ policy_request('recommended_action', 4) }}
    from compliance
    where is_compliance

    union all

    -- a status that moved with an address change at the ESP: both go in one push. So does the
    -- CRM's half of an ESP unsubscribe, with the status it resolves to (the ESP's is still the
    -- one before the push): a new status, or a new assignment or contact for a member the CRM
    -- does not have on the list
    {{ policy_request(
        'status_action', 4,
        "case when status_action in ('set_status', 'create_assignment', 'create_contact')
            and resolved_status <> coalesce(esp_status, '') then resolved_status end"
    ) }}
    from candidates
    where status_action is not null

    union all

    -- a person's request brings both sides to it in one push: an unsubscribe sets the CRM
    -- assignment to unsubscribed (or makes one, for a contact on no list: the ESP member comes
    -- back unsubscribed), a DOI for an opted-out contact to pending (or makes the assignment,
    -- pending, for a contact on no list). An ESP member the CRM has
    -- no contact for gets the contact now, with that status, not one sync later
    select
        reconciliation_id,
        case
            when crm_contact_id is null then 'create_contact'
            when crm_status is null then 'create_assignment'
            else 'set_status'
        end as action,
        action_source, decision_id, decided_by, decided_at,
        decision_note, decided_on_fingerprint,
        case action when 'unsubscribe' then 'unsubscribed' else 'pending' end as crm_target_status,
        action as parent_action,
        case action_source when 'manual' then 1 else 2 end as precedence
    from chosen
    where action_source in ('manual', 'crm_task')
        -- (a task word always has its contact; a decision may be on an ESP member alone)
        and (crm_contact_id is not null or (action_source = 'manual' and email_key is not null and esp_status is not null))
        and (
            (action = 'unsubscribe' and (crm_status is null or crm_status in ('subscribed', 'bounced_soft', 'pending')))
            or (action = 'start_doi' and (crm_status is null or crm_status in ('unsubscribed', 'bounced_hard', 'bounced')))
        )

),

-- the compliance rules: the first refusal that applies to the action in this state; the
-- CRM half of a person's request stands or falls with the request
refused as (

    select
        requested.reconciliation_id,
        requested.action,
        requested.precedence,
        refusals.reason as refusal_reason,
        row_number() over (
            partition by requested.reconciliation_id, requested.action, requested.precedence
            order by refusals.priority
        ) as refusal_rank

    from requested
    inner join reconciliation on requested.reconciliation_id = reconciliation.reconciliation_id
    inner join refusals
        on coalesce(requested.parent_action, requested.action) = refusals.action
        and (
            (refusals.refused_field = 'result' and reconciliation.result = refusals.refused_value)
            or (refusals.refused_field = 'rule' and reconciliation.rule = refusals.refused_value)
            or (refusals.refused_field = 'esp_status' and reconciliation.esp_status = refusals.refused_value)
            or (refusals.refused_field = 'crm_status' and reconciliation.crm_status = refusals.refused_value)
        )

),

checked as (

    select
        reconciliation.*,
        requested.action,
        requested.action_source,
        requested.decision_id,
        requested.decided_by,
        requested.decided_at,
        requested.decision_note,
        requested.crm_target_status,
        requested.precedence,
        refused.refusal_reason,
        case
            -- made on another state, or found so by a push before (the state coming back to the
            -- one it was made on does not run it a cycle late)
            when requested.action_source = 'manual'
                and (requested.decided_on_fingerprint <> reconciliation.state_fingerprint or decided.stale_at is not null)
                and coalesce(requested.parent_action, requested.action) <> 'unsubscribe'
                then 'stale'
            when reconciliation.result = 'aborted' then 'held'
            when refused.refusal_reason is not null then 'refused'
            else 'ready'
        end as queue_status

    from requested
    inner join reconciliation on requested.reconciliation_id = reconciliation.reconciliation_id
    left join {{ source('ops', 'decisions') }} as decided on requested.decision_id = decided.decision_id
    left join refused
        on requested.reconciliation_id = refused.reconciliation_id
        and requested.action = refused.action
        and requested.precedence = refused.precedence
        and refused.refusal_rank = 1

),

-- one row per address and action: what may run wins over what may not (a stale decision
-- does not hold back the compliance action it asked for too), then a person's request
deduplicated as (

    select
        *,
        row_number() over (
            partition by reconciliation_id, action
            order by case queue_status when 'ready' then 0 else 1 end, precedence
        ) as action_rank,
        -- what became of the request (a decision or task word) that replaced the policy's
        -- action, and which side it writes
        max(case when precedence in (1, 2) and crm_target_status is null then queue_status end)
            over (partition by reconciliation_id) as request_status,
        max(case when precedence in (1, 2) and crm_target_status is null then {{ pushback_target('action') }} end)
            over (partition by reconciliation_id) as request_target,
        max(case when precedence in (1, 2) and crm_target_status is null then action end)
            over (partition by reconciliation_id) as request_action

    from checked

),

final as (

    select
        -- an ESP member with an invalid address has neither key nor contact: its member id. A
        -- status the CRM is to take from a person's request is part of the action: a set_status
        -- that takes the ESP's status, done on the same state, is another action
        {{ dbt.hash("concat_ws('|', list_link_id, coalesce(email_key, crm_contact_id, concat('member:', esp_member_id)), action, state_fingerprint, crm_target_status)") }}
            as action_id,
        list_link_id,
        esp_account,
        esp_list_id,
        crm_list_id,
        email_key,
        email_address,
        former_email_key,
        -- a status the CRM takes goes to the contact whose status is the address's consent
        case
            when action in ('set_status', 'mark_bounced') then crm_consent_contact_id
            else crm_contact_id
        end as crm_contact_id,
        esp_member_id,
        action,
        {{ pushback_target('action') }} as target,
        action_source,
        decision_id,
        decided_by,
        decided_at,
        decision_note,
        crm_target_status,
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
        run_id,
        {{ dbt.current_timestamp() }} as queued_at

    from deduplicated
    where action_rank = 1
        -- a request replaces the policy's action on its own side only; a field update changes
        -- no status, so it joins the policy's action (replaced, that would come back next push)
        and (
            precedence <> 5 or request_status = 'refused' or request_target <> {{ pushback_target('action') }}
            or request_action = 'update_fields'
        )

)

select * from final
