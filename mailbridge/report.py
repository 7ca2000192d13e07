"""`mailbridge report`: one self-contained HTML file of the warehouse, for people who would rather
look than query. Plotly's JavaScript is inlined, so it opens offline and from a mail attachment:
no CDN, no server.

It shows the KPIs of each campaign over time, the growth of each list, the reconciliation's
results per list with what waits for a person, the push outcomes of the last runs and how much
of the subscribed memberships' consent the ledger proves."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

PUSH_RUNS = 10
GROWTH_DAYS = 365


@dataclass(frozen=True)
class Section:
    title: str
    explanation: str
    figure: Any | None  # a plotly Figure; None when there is nothing to show yet
    empty: str = "Nothing yet: run a sync first."


def _rows(db: duckdb.DuckDBPyConnection, query: str) -> list[tuple[Any, ...]]:
    try:
        return db.execute(query).fetchall()
    except duckdb.CatalogException:  # a mart a warehouse of an older version does not have yet
        return []


def _campaigns(db: duckdb.DuckDBPyConnection) -> Section:
    import plotly.graph_objects as go

    rows = _rows(
        db,
        "select send_time, campaign_title, open_rate, click_rate, bounce_rate, unsubscribe_rate, sent "
        "from marts.fct_campaign_performance where sent > 0 and send_time is not null order by send_time",
    )
    figure = None
    if rows:
        figure = go.Figure()
        for index, name in ((2, "open rate"), (3, "click rate"), (4, "bounce rate"), (5, "unsubscribe rate")):
            figure.add_trace(
                go.Scatter(
                    x=[row[0] for row in rows],
                    y=[row[index] for row in rows],
                    mode="lines+markers",
                    name=name,
                    text=[f"{row[1]} ({row[6]:,} sent)" for row in rows],
                    hovertemplate="%{text}<br>%{y:.1%}<extra>" + name + "</extra>",
                )
            )
        figure.update_layout(
            yaxis_tickformat=".0%", yaxis_title="of delivered (bounces: of sent)", xaxis_tickformat="%Y-%m-%d"
        )
    return Section(
        "Campaigns",
        "Open and click rates are unique opens and clicks over delivered mails, as the ESPs show them.",
        figure,
    )


def _growth(db: duckdb.DuckDBPyConnection) -> Section:
    import plotly.graph_objects as go

    rows = _rows(
        db,
        "select list_link_id, day, subscribed_at_day_end from marts.fct_list_growth "
        f"where day >= current_date - {GROWTH_DAYS} order by list_link_id, day",
    )
    figure = None
    if rows:
        figure = go.Figure()
        for link in sorted({row[0] for row in rows}):
            own = [row for row in rows if row[0] == link]
            figure.add_trace(go.Scatter(x=[row[1] for row in own], y=[row[2] for row in own], mode="lines", name=link))
        figure.update_layout(yaxis_title="subscribed at day end")
    return Section("List growth", f"Subscribed members of each linked list, the last {GROWTH_DAYS} days.", figure)


def _reconciliation(db: duckdb.DuckDBPyConnection) -> Section:
    import plotly.graph_objects as go

    rows = _rows(
        db,
        "select list_link_id, result, count(*) from marts.fct_list_reconciliation group by all order by all",
    )
    waiting = dict(
        _rows(
            db,
            "select list_link_id, count(*) from marts.fct_list_reconciliation "
            "where recommended_action = 'await_decision' group by all",
        )
    )
    figure = None
    if rows:
        links = sorted({row[0] for row in rows})
        labels = [f"{link} ({waiting.get(link, 0):,} wait for a person)" for link in links]
        figure = go.Figure()
        for result in sorted({row[1] for row in rows}):
            counts = {row[0]: row[2] for row in rows if row[1] == result}
            figure.add_trace(go.Bar(x=labels, y=[counts.get(link, 0) for link in links], name=result))
        figure.update_layout(barmode="stack", yaxis_title="addresses")
    return Section(
        "Reconciliation",
        "The latest result of every address per list; those waiting for a person need `mailbridge decide`.",
        figure,
    )


def _pushes(db: duckdb.DuckDBPyConnection) -> Section:
    import plotly.graph_objects as go

    rows = _rows(
        db,
        "with runs as (select run_id, min(attempted_at) as started from ops.pushback_outbox group by run_id "
        f"order by started desc limit {PUSH_RUNS}) "
        "select runs.run_id, runs.started, outbox.status, count(*) from ops.pushback_outbox as outbox "
        "inner join runs on outbox.run_id = runs.run_id group by all order by runs.started",
    )
    figure = None
    if rows:
        runs = list(dict.fromkeys(f"{row[1]:%Y-%m-%d %H:%M}" for row in rows))
        figure = go.Figure()
        for status in sorted({row[2] for row in rows}):
            counts = {f"{row[1]:%Y-%m-%d %H:%M}": row[3] for row in rows if row[2] == status}
            figure.add_trace(go.Bar(x=runs, y=[counts.get(run, 0) for run in runs], name=status))
        figure.update_layout(barmode="stack", yaxis_title="actions", xaxis_type="category")
    return Section(
        "Push outcomes",
        f"What the last {PUSH_RUNS} pushes did, by outcome.",
        figure,
        empty="No push has run yet.",
    )


def _consent(db: duckdb.DuckDBPyConnection) -> Section:
    import plotly.graph_objects as go

    rows = _rows(
        db,
        "with subscribed as (select links.list_link_id, members.email_key "
        "from intermediate.int_esp__memberships as members "
        "inner join staging.stg_mailbridge__list_links as links "
        "on members.esp_account = links.esp_account and members.esp_list_id = links.esp_list_id "
        "where members.status = 'subscribed' and members.email_key is not null), "
        "proven as (select distinct list_link_id, email_key from marts.fct_consent_ledger "
        "where consent = 'given' and event_at is not null and channel is not null) "
        "select subscribed.list_link_id, count(proven.email_key), count(*) - count(proven.email_key) "
        "from subscribed left join proven on subscribed.list_link_id = proven.list_link_id "
        "and subscribed.email_key = proven.email_key group by all order by all",
    )
    figure = None
    if rows:
        figure = go.Figure(
            [
                go.Bar(x=[row[0] for row in rows], y=[row[1] for row in rows], name="consent proven"),
                go.Bar(x=[row[0] for row in rows], y=[row[2] for row in rows], name="no proof"),
            ]
        )
        figure.update_layout(barmode="stack", yaxis_title="subscribed memberships")
    return Section(
        "Consent coverage",
        "Subscribed memberships whose consent the ledger proves: when, where and how it was given.",
        figure,
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1d2733; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #d5dbe3; padding-bottom: 0.3rem; }
p.meta, p.note { color: #5a6675; margin-top: 0.2rem; }
.empty { color: #5a6675; font-style: italic; padding: 1rem 0; }
"""


def render_report(warehouse: Path) -> str:
    """The report of the warehouse as one HTML document."""
    import plotly.offline

    with duckdb.connect(str(warehouse), read_only=True) as db:
        sections = [section(db) for section in (_campaigns, _growth, _reconciliation, _pushes, _consent)]
    parts = []
    for number, section in enumerate(sections):
        parts.append(f"<h2>{html.escape(section.title)}</h2><p class='note'>{html.escape(section.explanation)}</p>")
        if section.figure is None:
            parts.append(f"<div class='empty'>{html.escape(section.empty)}</div>")
            continue
        section.figure.update_layout(
            height=380, margin={"l": 60, "r": 20, "t": 20, "b": 60}, template="plotly_white", showlegend=True
        )
        parts.append(
            section.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{number}", validate=True)
        )
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>mailbridge report</title>"
        f"<style>{STYLE}</style>"
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>"
        "</head><body>"
        "<h1>mailbridge report</h1>"
        f"<p class='meta'>{html.escape(str(warehouse.name))}, made {made}</p>" + "".join(parts) + "</body></html>"
    )


def write_report(warehouse: Path, out: Path) -> Path:
    """Write the report next to nothing else: one file, written whole or not at all."""
    document = render_report(warehouse)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(document, "utf-8")
    partial.replace(out)
    return out
