{#- The duplicate rule (DESIGN.md), the one used wherever a CRM contact is picked for an
    address: of the contacts that share a key, the one whose first and last name match the
    ESP's speaks for it; otherwise the lowest contact id does, and `duplicate_note` says so
    (`duplicate_contacts_undecided`, which the reconciliation turns into a warning).
    `candidates` is a relation with the columns in `partition_by`, crm_contact_id and
    matches_esp_name; the result keeps one row per partition with contacts_with_key and
    duplicate_note beside the candidate's columns. -#}
{% macro pick_duplicate_contact(candidates, partition_by) -%}
    {%- set partition = partition_by | join(', ') -%}
    select
        ranked.*,
        case
            when ranked.contacts_with_key = 1 then null
            when ranked.contacts_matching_name = 1 then concat(
                'duplicate_contacts_by_name: contacts ', duplicate_ids.contact_ids,
                ' share this address; the name matches contact ', ranked.crm_contact_id
            )
            else concat(
                'duplicate_contacts_undecided: contacts ', duplicate_ids.contact_ids,
                ' share this address and the names do not pick one; the lowest id, ',
                ranked.crm_contact_id, ', is taken'
            )
        end as duplicate_note

    from (
        select
            *,
            count(*) over (partition by {{ partition }}) as contacts_with_key,
            sum(case when matches_esp_name then 1 else 0 end) over (partition by {{ partition }})
                as contacts_matching_name,
            row_number() over (
                partition by {{ partition }}
                order by case when matches_esp_name then 0 else 1 end, length(crm_contact_id), crm_contact_id
            ) as key_rank
        from {{ candidates }}
    ) as ranked
    left join (
        select
            {{ partition }},
            {{ dbt.listagg('crm_contact_id', "', '", "order by length(crm_contact_id), crm_contact_id") }}
                as contact_ids
        from {{ candidates }}
        group by {{ partition }}
        having count(*) > 1
    ) as duplicate_ids
        on {% for column in partition_by %}ranked.{{ column }} = duplicate_ids.{{ column }}{% if not loop.last %} and {% endif %}{% endfor %}
    where ranked.key_rank = 1
{%- endmacro %}
