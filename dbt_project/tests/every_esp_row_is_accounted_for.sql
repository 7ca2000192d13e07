-- A warning, not an error: a count that does not add up is a defect to look into, and an
-- error would fail the build, and the push gate with it, holding back every opt-out.
{{ config(severity='warn') }}
-- Records read = records accounted, per ESP list of its latest extraction: each list returned
-- here lost records on the way (`lost`) or loaded records that no mart and no event has
-- (`unaccounted`).
select
    run_id,
    source,
    esp_account,
    esp_list_id,
    max(rows_read) as rows_read,
    sum(case when outcome in ('lost', 'unaccounted') then 0 else row_count end) as rows_accounted,
    sum(case when outcome = 'lost' then row_count else 0 end) as rows_lost,
    sum(case when outcome = 'unaccounted' then row_count else 0 end) as rows_unaccounted

from {{ ref('fct_esp_row_accounting') }}
group by run_id, source, esp_account, esp_list_id
having max(rows_read) <> sum(case when outcome in ('lost', 'unaccounted') then 0 else row_count end)
