{#- The tables mailbridge itself writes (not dbt, not dlt): manual decisions and the push-back
    outbox. Created before every run so the models can read them from the first sync on. -#}
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
{%- endmacro %}
