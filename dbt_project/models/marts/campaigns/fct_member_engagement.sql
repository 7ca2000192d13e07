-- One row per list link and email key: how a member of a linked ESP list reacts to its
-- mailings. The tiers, as of the reconciliation's moment (var `as_of`, else now): `active`
-- opened or clicked within 30 days, `cooling` within 90, `dormant` longer ago, `never` has
-- not reacted to any mailing (or received none).
with

events as (

    select * from {{ ref('int_esp__email_events') }}

),

links as (

    select list_link_id, esp_account, esp_list_id from {{ ref('stg_mailbridge__list_links') }}

),

memberships as (

    select esp_account, esp_list_id, email_key, status
    from {{ ref('int_esp__memberships') }}
    where email_key is not null

),

as_of as (

    select {{ reconcile_as_of() }} as as_of

),

reactions as (

    select
        links.list_link_id,
        events.email_key,
        count(distinct case when events.event_type = 'sent' then events.campaign_id end) as mailings_received,
        max(case when events.event_type = 'open' then events.occurred_at end) as last_open_at,
        max(case when events.event_type = 'click' then events.occurred_at end) as last_click_at,
        count(case when events.event_type = 'open' and events.occurred_at >= as_of.as_of - interval '30 days' then 1 end)
            as opens_30d,
        count(case when events.event_type = 'click' and events.occurred_at >= as_of.as_of - interval '30 days' then 1 end)
            as clicks_30d,
        count(case when events.event_type = 'open' and events.occurred_at >= as_of.as_of - interval '90 days' then 1 end)
            as opens_90d,
        count(case when events.event_type = 'click' and events.occurred_at >= as_of.as_of - interval '90 days' then 1 end)
            as clicks_90d

    from events
    inner join links
        on events.esp_account = links.esp_account
        and events.esp_list_id = links.esp_list_id
    cross join as_of
    where events.email_key is not null
    group by links.list_link_id, events.email_key

),

members as (

    select links.list_link_id, memberships.email_key, memberships.status as esp_status
    from memberships
    inner join links
        on memberships.esp_account = links.esp_account
        and memberships.esp_list_id = links.esp_list_id

),

keys as (

    select list_link_id, email_key from members
    union
    select list_link_id, email_key from reactions

),

joined as (

    select
        keys.list_link_id,
        links.esp_account,
        links.esp_list_id,
        keys.email_key,
        members.esp_status,
        coalesce(reactions.mailings_received, 0) as mailings_received,
        reactions.last_open_at,
        reactions.last_click_at,
        case
            when reactions.last_click_at is null then reactions.last_open_at
            when reactions.last_open_at is null then reactions.last_click_at
            when reactions.last_click_at > reactions.last_open_at then reactions.last_click_at
            else reactions.last_open_at
        end as last_reaction_at,
        coalesce(reactions.opens_30d, 0) as opens_30d,
        coalesce(reactions.clicks_30d, 0) as clicks_30d,
        coalesce(reactions.opens_90d, 0) as opens_90d,
        coalesce(reactions.clicks_90d, 0) as clicks_90d

    from keys
    inner join links on keys.list_link_id = links.list_link_id
    left join members
        on keys.list_link_id = members.list_link_id
        and keys.email_key = members.email_key
    left join reactions
        on keys.list_link_id = reactions.list_link_id
        and keys.email_key = reactions.email_key

),

final as (

    select
        {{ dbt.hash("concat_ws('|', joined.list_link_id, joined.email_key)") }} as member_engagement_id,
        joined.*,
        case
            when joined.last_reaction_at is null then 'never'
            when joined.last_reaction_at >= as_of.as_of - interval '30 days' then 'active'
            when joined.last_reaction_at >= as_of.as_of - interval '90 days' then 'cooling'
            else 'dormant'
        end as engagement_tier

    from joined
    cross join as_of

)

select * from final
