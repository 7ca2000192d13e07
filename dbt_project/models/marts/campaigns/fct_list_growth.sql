-- One row per list link and day, from the first day a member of the list subscribed to the
-- reconciliation's moment: subscribed at day end, new subscribes, unsubscribes, bounces and
-- the net change. Built from the membership history (snp_esp__membership_history), not from
-- today's state: each status a membership has had, dated by its status time where the ESP
-- gives one, else by the sync that saw it. Before mailbridge first saw a membership, one that
-- was not subscribed then but has an opt-in time was subscribed from its opt-in.
with

history as (

    select * from {{ ref('snp_esp__membership_history') }}

),

links as (

    select list_link_id, esp_account, esp_list_id from {{ ref('stg_mailbridge__list_links') }}

),

versions as (

    select
        esp_account,
        esp_list_id,
        email_key,
        case
            when lower(cast(dbt_is_deleted as {{ dbt.type_string() }})) = 'true' then 'gone'
            else status
        end as status,
        case
            when lower(cast(dbt_is_deleted as {{ dbt.type_string() }})) = 'true' then dbt_valid_from
            else coalesce(status_changed_at, dbt_valid_from)
        end as changed_at,
        opted_in_at,
        row_number() over (
            partition by esp_account, esp_list_id, email_key order by dbt_valid_from
        ) as version

    from history

),

transitions as (

    select esp_account, esp_list_id, email_key, status, changed_at from versions

    union all

    select esp_account, esp_list_id, email_key, 'subscribed', opted_in_at
    from versions
    where version = 1 and status <> 'subscribed' and opted_in_at < changed_at

),

ordered as (

    select
        *,
        lag(status) over (partition by esp_account, esp_list_id, email_key order by changed_at) as previous_status

    from transitions
    where changed_at is not null

),

changes as (

    select
        links.list_link_id,
        cast(ordered.changed_at as date) as day,
        count(case when ordered.status = 'subscribed' then 1 end) as new_subscribes,
        count(case when ordered.status = 'unsubscribed' then 1 end) as unsubscribes,
        count(case when ordered.status in ('bounced_hard', 'bounced_soft', 'bounced') then 1 end) as bounces,
        count(case when ordered.status = 'subscribed' then 1 end)
            - count(case when ordered.previous_status = 'subscribed' then 1 end) as net_change

    from ordered
    inner join links
        on ordered.esp_account = links.esp_account
        and ordered.esp_list_id = links.esp_list_id
    where ordered.previous_status is null or ordered.status <> ordered.previous_status
    group by links.list_link_id, cast(ordered.changed_at as date)

),

bounds as (

    select list_link_id, min(day) as first_day, cast({{ reconcile_as_of() }} as date) as last_day
    from changes
    group by list_link_id

),

spine as (

    select bounds.list_link_id, cast(days.day as date) as day
    from bounds
    cross join lateral generate_series(
        cast(bounds.first_day as {{ dbt.type_timestamp() }}),
        cast(bounds.last_day as {{ dbt.type_timestamp() }}),
        interval '1 day'
    ) as days (day)

),

final as (

    select
        {{ dbt.hash("concat_ws('|', spine.list_link_id, cast(spine.day as " ~ dbt.type_string() ~ "))") }}
            as list_growth_id,
        spine.list_link_id,
        spine.day,
        cast(sum(coalesce(changes.net_change, 0)) over (
            partition by spine.list_link_id order by spine.day rows between unbounded preceding and current row
        ) as bigint) as subscribed_at_day_end,
        coalesce(changes.new_subscribes, 0) as new_subscribes,
        coalesce(changes.unsubscribes, 0) as unsubscribes,
        coalesce(changes.bounces, 0) as bounces,
        coalesce(changes.net_change, 0) as net_change

    from spine
    left join changes
        on spine.list_link_id = changes.list_link_id
        and spine.day = changes.day

)

select * from final
