"""The headline KPIs of the analytics marts, as Markdown tables on their materializations, so
the Dagster UI shows them beside the asset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

Query = tuple[str, Sequence[str]]

# each mart's headline: a query and its columns' headings
HEADLINES: dict[str, Query] = {
    "fct_campaign_performance": (
        "select campaign_title, cast(send_time as date), sent, delivered, open_rate, click_rate, "
        "unsubscribe_rate, bounce_rate from marts.fct_campaign_performance where sent > 0 "
        "order by send_time desc nulls last, campaign_title limit 10",
        ("campaign", "sent on", "sent", "delivered", "open rate", "click rate", "unsubscribe rate", "bounce rate"),
    ),
    "fct_list_growth": (
        "select list_link_id, max_by(subscribed_at_day_end, day), "
        "sum(case when day > current_date - 30 then net_change else 0 end), "
        "sum(case when day > current_date - 30 then new_subscribes else 0 end), "
        "sum(case when day > current_date - 30 then unsubscribes else 0 end) "
        "from marts.fct_list_growth group by list_link_id order by list_link_id",
        ("list link", "subscribed", "net change, 30 days", "subscribes, 30 days", "unsubscribes, 30 days"),
    ),
    "fct_member_engagement": (
        "select list_link_id, engagement_tier, count(*) from marts.fct_member_engagement "
        "group by all order by list_link_id, engagement_tier",
        ("list link", "tier", "addresses"),
    ),
    "fct_consent_ledger": (
        "select consent, system, channel, count(*) from marts.fct_consent_ledger group by all order by all",
        ("consent", "system", "channel", "events"),
    ),
}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1%}" if value <= 1 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "–" if value is None else str(value).replace("|", "\\|")


def markdown_table(headings: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def headline(warehouse: Path, model: str) -> str | None:
    """The mart's headline KPIs as a Markdown table; None for a mart without one or a
    warehouse that cannot be read now."""
    if model not in HEADLINES:
        return None
    import duckdb  # read only when a build has ended, not when the code location loads

    query, headings = HEADLINES[model]
    try:
        with duckdb.connect(str(warehouse), read_only=True) as db:
            rows = db.execute(query).fetchall()
    except duckdb.Error:
        return None
    return markdown_table(headings, rows) if rows else "(no rows yet)"
