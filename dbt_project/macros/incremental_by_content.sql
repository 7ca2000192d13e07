{#- Incremental models rebuilt by content, not by time: each group of rows (a campaign's email
    events, say) carries a fingerprint of what it was built from, and a run rebuilds only the
    groups whose fingerprint moved. Nothing depends on load times, so a killed or retried load,
    an identical re-read or a clock cannot make an incremental build differ from a full one.
    A change to these macros, which no model's checksum sees, needs a full sync. -#}

{#- A fingerprint of a group's rows: their count and the sum of a hash of each row's `columns`
    (order-free, and a repeated row counts twice), then the model's own `model_version()`. -#}
{% macro content_fingerprint(columns) -%}
    cast(count(*) as {{ dbt.type_string() }}) || ':' || cast(sum(hash({{ columns | join(', ') }})) as {{ dbt.type_string() }})
        || ':{{ model_version() }}'
{%- endmacro %}


{#- The version of the model being built: the start of the checksum dbt keeps of its SQL. Part
    of every fingerprint it stores, so a release that changes the model (a new column, another
    rule) builds every group again. -#}
{% macro model_version() -%}
    {{- model.checksum.checksum[:12] -}}
{%- endmacro %}


{#- True when this build adds to the stored rows: an incremental build of a table that already
    holds every one of `columns` (else, after an upgrade that added them, everything is rebuilt). -#}
{% macro incremental_ready(columns) -%}
    {%- if not is_incremental() -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set stored = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {%- for column in columns -%}
        {%- if column | lower not in stored -%}
            {{ return(false) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(true) }}
{%- endmacro %}


{#- The groups of `fingerprints` (`keys` and the `fingerprint` column) whose fingerprint differs
    from the one stored with the model's rows, or that it does not hold yet: the ones to build.
    A full build takes every group. -#}
{% macro changed_groups(fingerprints, keys, fingerprint, ready) -%}
    {%- if ready %}
    select {{ fingerprints }}.*
    from {{ fingerprints }}
    left join (select distinct {{ keys | join(', ') }}, {{ fingerprint }} from {{ this }}) as built
        on {% for key in keys %}{{ fingerprints }}.{{ key }} = built.{{ key }} and {% endfor -%}
        {{ fingerprints }}.{{ fingerprint }} = built.{{ fingerprint }}
    where built.{{ fingerprint }} is null
    {%- else %}
    select * from {{ fingerprints }}
    {%- endif %}
{%- endmacro %}


{#- The `replace_keys` incremental strategy: every stored row whose `unique_key` (one column or
    several) the new rows carry is deleted, then the new rows inserted. dbt-duckdb's own
    delete+insert joins the target to every new row for a key of several columns, which for
    keys shared by many rows (a campaign) grows with their square; this is a semi join. -#}
{% macro get_incremental_replace_keys_sql(arg_dict) -%}
    {%- set keys = [arg_dict['unique_key']] if arg_dict['unique_key'] is string else arg_dict['unique_key'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ arg_dict['target_relation'] }}
    where ({{ keys | join(', ') }}) in (
        select distinct {{ keys | join(', ') }} from {{ arg_dict['temp_relation'] }}
    );

    insert into {{ arg_dict['target_relation'] }} ({{ columns }})
    select {{ columns }} from {{ arg_dict['temp_relation'] }}
{%- endmacro %}
