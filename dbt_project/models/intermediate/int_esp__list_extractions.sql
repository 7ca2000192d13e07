-- The latest extraction of each ESP list: did it complete?
with

unioned as (

    {{ union_models('esp_list_extraction_models', [
        'extraction_id', 'run_id', 'esp_type', 'esp_account', 'esp_list_id', 'extraction_mode',
        'started_at', 'finished_at', 'is_completed', 'members_fetched', 'error_message',
    ]) }}

),

ranked as (

    select
        *,
        row_number() over (partition by esp_account, esp_list_id order by started_at desc) as recency

    from unioned

),

final as (

    select
        esp_type,
        esp_account,
        esp_list_id,
        extraction_id,
        run_id,
        extraction_mode,
        started_at,
        finished_at,
        is_completed,
        members_fetched,
        error_message

    from ranked
    where recency = 1

)

select * from final
