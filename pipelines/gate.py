"""Gates: mailbridge acts on the warehouse's picture of the lists only while that picture is
fresh, complete and built without failures.

A push is refused when the reconciliation is older than `gating.push_max_age_minutes` or
the latest dbt run failed a model or a test; lists whose extraction was aborted are held
(the queue marks their actions `held`). A campaign send is refused, with the reason, unless
its list reconciled within `gating.send_max_age_minutes`, completely, and no opt-out or
blocklist action is still waiting to be pushed for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

# queue actions that take an address off a list: while one waits, a campaign must not go out
OPT_OUT_ACTIONS = ("unsubscribe", "delete", "change_address_doi", "change_address_transmit")


@dataclass(frozen=True)
class Verdict:
    """Whether mailbridge may act, and every reason it may not."""

    reasons: list[str] = field(default_factory=list)
    reconciled_at: datetime | None = None
    aborted_lists: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.reasons

    def explain(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "ok"


def _has_table(db: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = db.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
    ).fetchone()
    return bool(row and row[0])


def _age_minutes(reconciled_at: datetime, now: datetime) -> float:
    return (now - reconciled_at).total_seconds() / 60


def _common_reasons(
    db: duckdb.DuckDBPyConnection, max_age_minutes: int, now: datetime
) -> tuple[list[str], datetime | None]:
    if not _has_table(db, "marts", "fct_list_reconciliation"):
        return ["nothing is reconciled yet: run `mailbridge sync` first"], None
    row = db.execute("select max(reconciled_at) from marts.fct_list_reconciliation").fetchone()
    reconciled_at = row[0] if row else None
    reasons = []
    if reconciled_at is None:
        reasons.append("the reconciliation is empty: run `mailbridge sync` first")
    elif (age := _age_minutes(reconciled_at, now)) > max_age_minutes:
        reasons.append(
            f"the reconciliation is {age:.0f} minutes old, the limit is {max_age_minutes}: run `mailbridge sync` first"
        )
    if _has_table(db, "ops", "dbt_runs"):
        latest = db.execute(
            "select failures, failed_nodes, run_id from ops.dbt_runs order by finished_at desc limit 1"
        ).fetchone()
        if latest is not None and latest[0]:
            reasons.append(f"the latest dbt run ({latest[2]}) failed {latest[0]} node(s): {latest[1]}")
    return reasons, reconciled_at


def push_gate(db: duckdb.DuckDBPyConnection, max_age_minutes: int, now: datetime | None = None) -> Verdict:
    """May the queue be pushed now? Aborted lists do not block the push; their actions are held."""
    reasons, reconciled_at = _common_reasons(db, max_age_minutes, now or datetime.now(UTC))
    aborted: list[str] = []
    if reconciled_at is not None:
        aborted = [
            r[0]
            for r in db.execute(
                "select distinct list_link_id from marts.fct_list_reconciliation where result = 'aborted' order by 1"
            ).fetchall()
        ]
    return Verdict(reasons, reconciled_at, aborted)


def send_gate(
    db: duckdb.DuckDBPyConnection, list_link_id: str, max_age_minutes: int, now: datetime | None = None
) -> Verdict:
    """May a campaign to this list link go out now?"""
    reasons, reconciled_at = _common_reasons(db, max_age_minutes, now or datetime.now(UTC))
    if reconciled_at is None:
        return Verdict(reasons, None)
    aborted = db.execute(
        "select count(*) from marts.fct_list_reconciliation where list_link_id = ? and result = 'aborted'",
        [list_link_id],
    ).fetchone()
    if aborted and aborted[0]:
        reasons.append(f"the latest extraction of list link {list_link_id!r} did not complete")
    actions = ", ".join(f"'{action}'" for action in OPT_OUT_ACTIONS)
    pending = db.execute(
        f"""
        select count(*), list(email_address order by email_key)[1:3]
        from marts.fct_pushback_queue
        where list_link_id = ? and queue_status in ('ready', 'held')
            and (action in ({actions}) or result = 'blocked')
            and action_id not in (select action_id from ops.pushback_outbox where status in ('sent', 'confirmed'))
        """,
        [list_link_id],
    ).fetchone()
    if pending and pending[0]:
        reasons.append(
            f"{pending[0]} opt-out or blocklist action(s) for list link {list_link_id!r} are not pushed yet "
            f"(e.g. {', '.join(pending[1])}): run `mailbridge push` first"
        )
    return Verdict(reasons, reconciled_at)
