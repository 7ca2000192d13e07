"""Push-back to the ESPs: read the ready actions of the queue, write them, record every attempt.

Every attempt is a row in ops.pushback_outbox before it is sent (planned) and after (sent,
rejected or failed). A rerun skips what was sent or rejected, so nothing is written twice;
the next sync confirms what was sent (its action is no longer needed) or sends it again.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from mailbridge.config import MailbridgeConfig
from pipelines.registry import connector
from pipelines.writers import EspWrite, EspWriter, WriteOutcome

# one queue action can be more than one ESP write: an address change unsubscribes the former one
EXPANSIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "transmit": (("transmit", "email_address"),),
    "start_doi": (("start_doi", "email_address"),),
    "unsubscribe": (("unsubscribe", "email_address"),),
    "update_fields": (("update_fields", "email_address"),),
    "delete": (("delete", "email_address"),),
    "change_address_doi": (("unsubscribe", "former_email_key"), ("start_doi", "email_address")),
    "change_address_transmit": (("unsubscribe", "former_email_key"), ("transmit", "email_address")),
}

READY_ESP_ACTIONS = """
    select
        queue.action_id, queue.list_link_id, queue.esp_account, queue.esp_list_id, queue.email_key,
        queue.email_address, queue.former_email_key, queue.action, queue.action_source, queue.rule,
        contacts.first_name, contacts.last_name
    from marts.fct_pushback_queue as queue
    left join staging.stg_crm__contacts as contacts on queue.crm_contact_id = contacts.crm_contact_id
    where queue.queue_status = 'ready' and queue.target = 'esp'
        and queue.action_id not in (
            select action_id from ops.pushback_outbox where status in ('sent', 'confirmed', 'rejected')
        )
    order by queue.esp_account, queue.esp_list_id, queue.action, queue.email_key
"""


@dataclass(frozen=True)
class QueuedAction:
    action_id: str
    list_link_id: str
    esp_account: str
    esp_list_id: str
    email_key: str
    email_address: str
    former_email_key: str | None
    action: str
    action_source: str
    rule: str
    first_name: str | None
    last_name: str | None

    def writes(self) -> list[EspWrite]:
        fields = {k: v for k, v in (("FNAME", self.first_name), ("LNAME", self.last_name)) if v}
        out = []
        for esp_action, address_field in EXPANSIONS[self.action]:
            address = self.former_email_key if address_field == "former_email_key" else self.email_address
            out.append(
                EspWrite(
                    action_id=self.action_id,
                    action=esp_action,  # type: ignore[arg-type]
                    email_address=str(address),
                    fields=fields if esp_action in ("transmit", "update_fields", "start_doi") else {},
                )
            )
        return out


@dataclass
class PushReport:
    """What a push did (or, dry, would do): counts per list and action, and samples."""

    dry_run: bool
    counts: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    samples: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    confirmed: int = 0
    interrupted: int = 0
    write_requests: int = 0

    def add(self, action: QueuedAction, status: str) -> None:
        key = (action.list_link_id, action.action, action.action_source)
        self.counts.setdefault(key, defaultdict(int))[status] += 1
        samples = self.samples.setdefault(key, [])
        if len(samples) < 3:
            samples.append(f"{action.email_address} ({action.rule})")


def _now() -> datetime:
    return datetime.now(UTC)


def close_interrupted_attempts(db: duckdb.DuckDBPyConnection) -> int:
    """Attempts planned by a push that died before it heard back: failed, so sent again.
    Every write is an idempotent upsert, so sending one twice does no harm."""
    closed = db.execute(
        "update ops.pushback_outbox set status = 'failed', error_code = 'interrupted', "
        "error_message = 'the push stopped before the ESP answered', updated_at = ? "
        "where status = 'planned' returning 1",
        [_now()],
    ).fetchall()
    return len(closed)


def confirm_previous_attempts(db: duckdb.DuckDBPyConnection) -> int:
    """After a sync: an action sent before the queue was rebuilt is confirmed when it is no
    longer needed, and failed ('not_confirmed', so sent again) when it still is."""
    built = db.execute("select max(reconciled_at) from marts.fct_list_reconciliation").fetchone()
    if built is None or built[0] is None:
        return 0
    queued = "select action_id from marts.fct_pushback_queue where queue_status = 'ready'"
    confirmed = db.execute(
        f"update ops.pushback_outbox set status = 'confirmed', updated_at = ? "
        f"where status = 'sent' and attempted_at < ? and action_id not in ({queued}) returning 1",
        [_now(), built[0]],
    ).fetchall()
    db.execute(
        f"update ops.pushback_outbox set status = 'failed', error_code = 'not_confirmed', "
        f"error_message = 'the sync after this write still needs it', updated_at = ? "
        f"where status = 'sent' and attempted_at < ? and action_id in ({queued})",
        [_now(), built[0]],
    )
    return len(confirmed)


def blocklist_predicate(db: duckdb.DuckDBPyConnection) -> Callable[[str], bool]:
    """Is a key blocklisted, by address or by domain (the same test the reconciliation makes)?"""
    rows = db.execute("select email_key, blocked_domain from staging.stg_crm__blocklist").fetchall()
    keys = {key for key, _ in rows if key}
    domains = {domain for _, domain in rows if domain}
    return lambda key: key in keys or key.partition("@")[2] in domains


def push_to_esps(
    config: MailbridgeConfig,
    *,
    run_id: str,
    dry_run: bool = False,
    allow_permanent_delete: bool = False,
    writer_factory: Callable[..., EspWriter] | None = None,
) -> PushReport:
    """Send every ready ESP action of the queue once; record each attempt in the outbox."""
    report = PushReport(dry_run=dry_run)
    warehouse: Path = config.warehouse_path()
    with duckdb.connect(str(warehouse), read_only=dry_run) as db:
        if not dry_run:
            report.interrupted = close_interrupted_attempts(db)
            report.confirmed = confirm_previous_attempts(db)
        cursor = db.execute(READY_ESP_ACTIONS)
        columns = [c[0] for c in cursor.description]
        actions = [QueuedAction(**dict(zip(columns, row, strict=True))) for row in cursor.fetchall()]
        by_list: dict[tuple[str, str], list[QueuedAction]] = defaultdict(list)
        for action in actions:
            by_list[(action.esp_account, action.esp_list_id)].append(action)
        if dry_run:
            for action in actions:
                report.add(action, "would_send")
            return report
        is_blocked = blocklist_predicate(db)
        for (account_name, list_id), queued in by_list.items():
            account = config.account(account_name)
            factory = writer_factory or connector(account.type).writer()
            writer = factory(account, is_blocked=is_blocked, allow_permanent_delete=allow_permanent_delete)
            attempts = _plan(db, queued, run_id, f"esp:{account_name}/{list_id}")
            outcomes = _write_all(writer, list_id, queued)
            for action in queued:
                outcome = outcomes[action.action_id]
                db.execute(
                    "update ops.pushback_outbox set status = ?, error_code = ?, error_message = ?, updated_at = ? "
                    "where attempt_id = ?",
                    [outcome.status, outcome.error_code, outcome.error_message, _now(), attempts[action.action_id]],
                )
                report.add(action, outcome.status)
            report.write_requests += int(getattr(writer, "requests", 0))
    return report


def _plan(db: duckdb.DuckDBPyConnection, queued: list[QueuedAction], run_id: str, target: str) -> dict[str, str]:
    """Record every attempt as planned before anything is sent: a killed push leaves a trace."""
    attempts = {action.action_id: uuid.uuid4().hex for action in queued}
    now = _now()
    db.executemany(
        "insert into ops.pushback_outbox values (?, ?, ?, ?, ?, ?, ?, ?, 'planned', null, null, ?, ?)",
        [
            [
                attempts[a.action_id],
                a.action_id,
                run_id,
                target,
                a.list_link_id,
                a.email_key,
                a.action,
                f"{a.action} {a.email_address}" + (f" (former {a.former_email_key})" if a.former_email_key else ""),
                now,
                now,
            ]
            for a in queued
        ],
    )
    return attempts


def _write_all(writer: EspWriter, list_id: str, queued: list[QueuedAction]) -> dict[str, WriteOutcome]:
    """All writes of the queued actions; an action's outcome is its worst write's, and
    transient failures get one more try within the run."""
    writes = [write for action in queued for write in action.writes()]
    outcomes = _aligned(writes, writer.write(list_id, writes))
    retry = [index for index, outcome in enumerate(outcomes) if outcome.retryable]
    if retry:
        again = [writes[index] for index in retry]
        for index, outcome in zip(retry, _aligned(again, writer.write(list_id, again)), strict=True):
            outcomes[index] = outcome
    rank = {"sent": 0, "failed": 1, "rejected": 2}
    worst: dict[str, WriteOutcome] = {}
    for outcome in outcomes:
        current = worst.get(outcome.action_id)
        if current is None or rank[outcome.status] > rank[current.status]:
            worst[outcome.action_id] = outcome
    return worst


def _aligned(writes: list[EspWrite], outcomes: list[WriteOutcome]) -> list[WriteOutcome]:
    """Outcomes in the order of the writes (a writer may answer in another order)."""
    pool: dict[str, list[WriteOutcome]] = defaultdict(list)
    for outcome in outcomes:
        pool[outcome.action_id].append(outcome)
    return [pool[write.action_id].pop(0) for write in writes]
