{#- The tables mailbridge itself writes (not dbt, not dlt): manual decisions, the push-back
    outbox, campaign sends and the record of dbt runs. Created before every run so the models can read them
    from the first sync on. -#}
{% macro create_ops_tables() -%}
    create schema if not exists ops;
    create table if not exists ops.decisions (
        decision_id varchar primary key,
        list_link_id varchar not null,
        email_key varchar not null,
        action varchar not null,
        state_fingerprint varchar not null,
        decided_by varchar,
        decided_at timestamp with time zone not null,
        note varchar
    );
    -- when a push found the decision done (a decided unsubscribe neither side needed any more):
    -- it never runs after that, whatever the state becomes
    alter table ops.decisions add column if not exists closed_at timestamp with time zone;
    -- when a push found the decision made on another state: stale for good
    alter table ops.decisions add column if not exists stale_at timestamp with time zone;
    create table if not exists ops.pushback_outbox (
        attempt_id varchar primary key,
        action_id varchar not null,
        run_id varchar not null,
        target varchar not null,
        list_link_id varchar,
        email_key varchar,
        action varchar not null,
        payload_summary varchar,
        status varchar not null,
        error_code varchar,
        error_message varchar,
        attempted_at timestamp with time zone not null,
        updated_at timestamp with time zone not null
    );
    -- the CRM task word an attempt carried out, and when the push cleared it in the CRM
    alter table ops.pushback_outbox add column if not exists crm_task varchar;
    alter table ops.pushback_outbox add column if not exists task_cleared_at timestamp with time zone;
    -- the former address an attempt unsubscribed because its contact moved on from it: mailbridge's
    -- own unsubscribe, not the person's opt-out
    alter table ops.pushback_outbox add column if not exists retired_email_key varchar;
    create table if not exists ops.campaign_sends (
        send_id varchar primary key,
        campaign_id varchar not null,
        esp_account varchar not null,
        esp_list_id varchar,
        list_link_id varchar,
        decided_at timestamp with time zone not null,
        outcome varchar not null,
        reasons varchar
    );
    -- what the push last wrote into crm.mailing_reactions, per contact and campaign (a hash of
    -- the row): the next push writes only what changed
    create table if not exists ops.crm_mailing_reactions (
        crm_contact_id varchar not null,
        campaign_id varchar not null,
        state_hash varchar not null,
        written_at timestamp with time zone not null,
        primary key (crm_contact_id, campaign_id)
    );
    create table if not exists ops.dbt_runs (
        invocation_id varchar primary key,
        run_id varchar not null,
        finished_at timestamp with time zone not null,
        nodes integer not null,
        failures integer not null,
        failed_nodes varchar
    );
{%- endmacro %}


{#- One row per dbt run, written when it ends: push and send refuse to act while the latest
    run has a failed model or test. -#}
{% macro record_dbt_run(results) -%}
    {%- if execute -%}
        {%- set failed = [] -%}
        {%- for result in results -%}
            {%- if result.status in ['error', 'fail'] -%}
                {%- do failed.append(result.node.unique_id) -%}
            {%- endif -%}
        {%- endfor -%}
        insert into ops.dbt_runs values (
            '{{ invocation_id }}',
            {{ run_id() }},
            {{ dbt.current_timestamp() }},
            {{ results | length }},
            {{ failed | length }},
            {{ "'" ~ (failed | join(", ") | replace("'", "''")) ~ "'" if failed else "null" }}
        )
    {%- endif -%}
{%- endmacro %}
