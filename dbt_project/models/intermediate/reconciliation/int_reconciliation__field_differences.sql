-- One row per pair, field and difference: names, salutation and every mapped field whose
-- values differ on the two sides, with both values and who wins the field by policy.
with

pairs as (

    select * from {{ ref('int_reconciliation__pairs') }}
    where in_crm and in_esp

),

fields as (

    select * from {{ ref('stg_mailbridge__field_policies') }}

),

valued as (

    select
        pairs.list_link_id,
        pairs.email_key,
        fields.field_name,
        fields.winner,
        fields.field_type,
        case fields.field_name
            when 'first_name' then pairs.crm_first_name
            when 'last_name' then pairs.crm_last_name
            when 'salutation' then pairs.crm_salutation
            else {{ json_text_field_at('pairs.crm_custom_fields', 'fields.field_name') }}
        end as crm_value,
        case fields.field_name
            when 'first_name' then pairs.esp_first_name
            when 'last_name' then pairs.esp_last_name
            when 'salutation' then pairs.esp_salutation
            else {{ json_text_field_at('pairs.esp_custom_fields', 'fields.esp_field') }}
        end as esp_value

    from pairs
    cross join fields

),

normalised as (

    select
        *,
        {{ normalize_field_value('crm_value', 'field_type') }} as crm_compared,
        {{ normalize_field_value('esp_value', 'field_type') }} as esp_compared

    from valued

),

final as (

    select
        list_link_id,
        email_key,
        field_name,
        winner,
        crm_value,
        esp_value

    from normalised
    where coalesce(crm_compared, '') <> coalesce(esp_compared, '')
        -- an ESP that does not carry the salutation at all has no say on it
        and not (field_name = 'salutation' and esp_value is null)

)

select * from final
