"""Push-back: read the ready actions of the queue, write them to the ESPs and the CRM, record
every attempt.

Every attempt is a row in ops.pushback_outbox before it is sent (planned) and after (sent,
rejected, failed or stale). A rerun skips what was sent, rejected or found stale, so
nothing is written twice; the next sync confirms what was sent (its action is no longer
needed) or sends it again.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from mailbridge.config import MailbridgeConfig
from mailbridge.warehouse_lock import hold_warehouse
from pipelines.crm.writer import CrmAction, CrmWriter
from pipelines.gate import Verdict, push_gate
from pipelines.http import EspApiError
from pipelines.registry import connector
from pipelines.writers import EspAccountError, EspWrite, EspWriter, WriteOutcome

LOG = logging.getLogger(__name__)

# one queue action can be more than one ESP write: an address change unsubscribes the former one
EXPANSIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "transmit": (("transmit", "email_address"),),
    "start_doi": (("start_doi", "email_address"),),
    "unsubscribe": (("unsubscribe", "email_address"),),
    "update_fields": (("update_fields", "email_address"),),
    "delete": (("delete", "email_address"),),
    "delete_permanent": (("delete_permanent", "email_address"),),
    "change_address_doi": (("unsubscribe", "former_email_key"), ("start_doi", "email_address")),
    "change_address_transmit": (("unsubscribe", "former_email_key"), ("transmit", "email_address")),
}

# an action from these answers the row's CRM task word: once written, the word is cleared (a
# decision made beside a task word supersedes it; an unsubscribe asked by the word wins over
# the decision, in the queue)
TASK_ANSWERING_SOURCES = ("crm_task", "manual")

# attempts that are not made again: written, confirmed, refused for good, or skipped as stale
DONE_STATUSES = "'sent', 'confirmed', 'rejected', 'stale'"

READY_ESP_ACTIONS = f"""
    select
        queue.action_id, queue.list_link_id, queue.esp_account, queue.esp_list_id, queue.email_key,
        queue.email_address, queue.former_email_key, queue.action, queue.action_source, queue.rule,
        queue.crm_contact_id, queue.crm_list_id, reconciliation.crm_task,
        contacts.first_name, contacts.last_name, members.email_address as esp_email_address,
        former_members.email_address as esp_former_email_address
    from marts.fct_pushback_queue as queue
    left join staging.stg_crm__contacts as contacts on queue.crm_contact_id = contacts.crm_contact_id
    left join marts.fct_list_reconciliation as reconciliation
        on queue.list_link_id = reconciliation.list_link_id and queue.email_key = reconciliation.email_key
    left join intermediate.int_esp__memberships as members
        on queue.esp_account = members.esp_account and queue.esp_list_id = members.esp_list_id
        and queue.email_key = members.email_key
    left join intermediate.int_esp__memberships as former_members
        on queue.esp_account = former_members.esp_account and queue.esp_list_id = former_members.esp_list_id
        and queue.former_email_key = former_members.email_key
    where queue.queue_status = 'ready' and queue.target = 'esp'
        and queue.action_id not in (select action_id from ops.pushback_outbox where status in ({DONE_STATUSES}))
    order by queue.esp_account, queue.esp_list_id, queue.action, queue.email_key
"""

READY_CRM_ACTIONS = f"""
    select
        queue.action_id, queue.list_link_id, queue.esp_account, queue.crm_list_id, queue.crm_contact_id,
        queue.email_key, queue.email_address, queue.action, queue.action_source, queue.rule,
        queue.crm_target_status, queue.decided_by, queue.decided_at, queue.decision_note,
        reconciliation.esp_status, reconciliation.esp_status_changed_at, reconciliation.crm_task,
        assignments.crm_status_value as extracted_status_value,
        assignments.status_changed_at as extracted_status_changed_at,
        contacts.crm_contact_id is not null as contact_extracted,
        contacts.email_address as contact_email, contacts.first_name as contact_first_name,
        contacts.last_name as contact_last_name, contacts.salutation as contact_salutation,
        contacts.modified_at as contact_modified_at,
        members.first_name as esp_first_name, members.last_name as esp_last_name,
        members.salutation as esp_salutation, members.email_address as esp_email_address,
        (
            select list(struct_pack(
                field_name := fields.field_name, winner := fields.winner, value := fields.esp_value
            ))
            from intermediate.int_reconciliation__field_differences as fields
            where fields.list_link_id = queue.list_link_id and fields.email_key = queue.email_key
        ) as field_differences
    from marts.fct_pushback_queue as queue
    inner join marts.fct_list_reconciliation as reconciliation
        on queue.list_link_id = reconciliation.list_link_id and queue.email_key = reconciliation.email_key
    left join staging.stg_crm__assignments as assignments
        on queue.crm_contact_id = assignments.crm_contact_id and queue.crm_list_id = assignments.crm_list_id
    left join staging.stg_crm__contacts as contacts on queue.crm_contact_id = contacts.crm_contact_id
    left join intermediate.int_esp__memberships as members
        on queue.esp_account = members.esp_account and queue.esp_list_id = members.esp_list_id
        and queue.email_key = members.email_key
    where queue.queue_status = 'ready' and queue.target = 'crm'
        and queue.action_id not in (select action_id from ops.pushback_outbox where status in ({DONE_STATUSES}))
    order by queue.crm_list_id, queue.action, queue.email_key
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
    crm_contact_id: str | None
    crm_list_id: str
    crm_task: str | None
    first_name: str | None
    last_name: str | None
    # the ESP member's own address at this key (an address changed at the ESP: the new one)
    esp_email_address: str | None = None
    # the ESP member's own address at the former key (an address changed in the CRM)
    esp_former_email_address: str | None = None

    @property
    def sample(self) -> str:
        return f"{self.email_address} ({self.rule})"

    def writes(self) -> list[EspWrite]:
        fields = {k: v for k, v in (("FNAME", self.first_name), ("LNAME", self.last_name)) if v}
        out = []
        for esp_action, address_field in EXPANSIONS[self.action]:
            # a write goes to the ESP member: one changed at the ESP is at the ESP's new address
            # (this key); one changed in the CRM is still at the former address there, whatever
            # the rule (a blocklist carried to the new address too): only a transmit or DOI
            # makes the new one
            makes_member = esp_action in ("transmit", "start_doi")
            if address_field == "former_email_key":
                address = self.former_email_key
            elif self.esp_email_address and esp_action != "transmit":
                address = self.esp_email_address
            elif not makes_member and self.esp_former_email_address:
                address = self.esp_former_email_address
            elif not makes_member and self.rule == "email_changed_in_crm" and self.former_email_key:
                address = self.former_email_key
            else:
                address = self.email_address
            out.append(
                EspWrite(
                    action_id=self.action_id,
                    action=esp_action,  # type: ignore[arg-type]
                    email_address=str(address),
                    fields=fields if esp_action in ("transmit", "update_fields", "start_doi") else {},
                )
            )
        return out


class PushAccountFailed(Exception):
    """An ESP account refused the push's credentials: its actions stay ready for the next push.
    The rest of the push (other accounts, the CRM) was done; `report` says what."""

    def __init__(self, errors: list[str], report: PushReport) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors
        self.report = report


class PushRefused(Exception):
    """The push gate refused: the reconciliation is too old or its dbt run failed."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"push refused: {verdict.explain()}")
        self.verdict = verdict


@dataclass
class PushReport:
    """What a push did (or, dry, would do): counts per list and action, and samples."""

    dry_run: bool
    counts: dict[tuple[str, str, str], dict[str, int]] = field(default_factory=dict)
    samples: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    confirmed: int = 0
    interrupted: int = 0
    decisions_closed: int = 0  # decided unsubscribes found done (neither side needed them)
    decisions_gone_stale: int = 0  # decisions found made on another state: stale for good
    write_requests: int = 0
    gate: Verdict | None = None
    crm_statements: int = 0
    tasks_cleared: int = 0
    # (contact, CRM list) of members deleted at the ESP: their CRM assignments go too
    deleted_at_esp: list[tuple[str, str]] = field(default_factory=list)
    assignments_removed: int = 0
    # accounts whose credentials the ESP refused: what it said, per account
    account_errors: dict[str, str] = field(default_factory=dict)
    queue_refreshed: bool = False
    # recipients' reactions to mailings written into crm.mailing_reactions (a dry run: would write)
    reactions_written: int = 0

    def add(self, list_link_id: str, action: str, source: str, status: str, sample: str) -> None:
        key = (list_link_id, action, source)
        self.counts.setdefault(key, defaultdict(int))[status] += 1
        samples = self.samples.setdefault(key, [])
        if len(samples) < 3:
            samples.append(sample)


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


def close_done_decisions(db: duckdb.DuckDBPyConnection) -> int:
    """Close the decided unsubscribes that neither side needs any more (the queue leaves them
    out while that holds): for good, so that a later opt-in of the person does not bring them
    back. The number closed."""
    closed = db.execute(
        """
        update ops.decisions as decision set closed_at = ?
        where decision.closed_at is null
            and decision.action = 'unsubscribe'
            and exists (
                select 1 from marts.fct_list_reconciliation as reconciliation
                where reconciliation.list_link_id = decision.list_link_id
                    and reconciliation.email_key = decision.email_key
                    and reconciliation.is_opted_out_on_both_sides
            )
        returning decision_id
        """,
        [_now()],
    ).fetchall()
    return len(closed)


def mark_stale_decisions(db: duckdb.DuckDBPyConnection) -> int:
    """A decision the queue found made on another state stays stale for good: the state coming
    back to the one it was made on (a push undoing what changed) does not run it a cycle late,
    unasked. Decide again. The number marked."""
    marked = db.execute(
        """
        update ops.decisions set stale_at = ?
        where stale_at is null and closed_at is null
            and decision_id in (select decision_id from marts.fct_pushback_queue where queue_status = 'stale')
        returning decision_id
        """,
        [_now()],
    ).fetchall()
    return len(marked)


def confirm_previous_attempts(db: duckdb.DuckDBPyConnection) -> int:
    """After a sync: an action sent before the queue was rebuilt is confirmed when it is no
    longer needed, and failed ('not_confirmed', so sent again) when it still is. On a list
    whose read broke off (aborted) the sync saw nothing: its actions stay sent until one reads it."""
    built = db.execute("select max(reconciled_at) from marts.fct_list_reconciliation").fetchone()
    if built is None or built[0] is None:
        return 0
    queued = "select action_id from marts.fct_pushback_queue where queue_status = 'ready'"
    unread = (
        "select list_link_id from marts.fct_list_reconciliation where result = 'aborted' and list_link_id is not null"
    )
    confirmed = db.execute(
        f"update ops.pushback_outbox set status = 'confirmed', updated_at = ? "
        f"where status = 'sent' and attempted_at < ? and action_id not in ({queued}) "
        f"and coalesce(list_link_id, '') not in ({unread}) returning 1",
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


def push(
    config: MailbridgeConfig,
    *,
    run_id: str,
    dry_run: bool = False,
    allow_permanent_delete: bool = False,
    writer_factory: Callable[..., EspWriter] | None = None,
    crm_writer: CrmWriter | None = None,
) -> PushReport:
    """`_push` holding the warehouse: a push never reads a queue that a sync is rebuilding, and
    never writes the outbox beside another writer (a dry run may rebuild the queue too)."""
    with hold_warehouse(
        config.warehouse_path(),
        f"push {run_id}" + (" (dry run)" if dry_run else ""),
        timeout=config.warehouse_wait_seconds,
        run_id=run_id,
    ):
        return _push(
            config,
            run_id=run_id,
            dry_run=dry_run,
            allow_permanent_delete=allow_permanent_delete,
            writer_factory=writer_factory,
            crm_writer=crm_writer,
        )


def _push(
    config: MailbridgeConfig,
    *,
    run_id: str,
    dry_run: bool = False,
    allow_permanent_delete: bool = False,
    writer_factory: Callable[..., EspWriter] | None = None,
    crm_writer: CrmWriter | None = None,
) -> PushReport:
    """Send every ready action of the queue once, to the ESPs and to the CRM; record each
    attempt in the outbox. CRM task words that were executed are cleared in the CRM.

    Refused (PushRefused) when the push gate says the reconciliation is too old or its dbt
    run failed; a dry run reports the gate's verdict and goes on."""
    report = PushReport(dry_run=dry_run)
    # decisions made since the queue was built count: the queue is rebuilt with them first
    report.queue_refreshed = refresh_queue_if_behind(config)
    with duckdb.connect(str(config.warehouse_path()), read_only=dry_run) as db:
        report.gate = push_gate(db, config.gating.push_max_age_minutes)
        if not report.gate.allowed and not dry_run:
            raise PushRefused(report.gate)
        if not dry_run:
            report.interrupted = close_interrupted_attempts(db)
            report.confirmed = confirm_previous_attempts(db)
            report.decisions_closed = close_done_decisions(db)
            report.decisions_gone_stale = mark_stale_decisions(db)
        esp_actions = _fetch(db, READY_ESP_ACTIONS, QueuedAction)
        # a read-only CRM gets its changes by `mailbridge export` instead
        crm_rows = _fetch(db, READY_CRM_ACTIONS, dict) if config.crm.write_back else []
        crm_actions = [_crm_action(row, config) for row in crm_rows]
        if dry_run:
            if config.crm.write_back and config.crm.mailing_reactions is not None:
                report.reactions_written = len(changed_reactions(db))
            for action in esp_actions:
                report.add(action.list_link_id, action.action, action.action_source, "would_send", action.sample)
            for row, crm_action in zip(crm_rows, crm_actions, strict=True):
                report.add(
                    row["list_link_id"], crm_action.action, crm_action.action_source, "would_write", _sample(row)
                )
            return report
        _push_esp(db, config, esp_actions, run_id, report, writer_factory, allow_permanent_delete)
        if config.crm.write_back:
            writer = crm_writer or CrmWriter(
                config.crm.connection_url(config.base_dir), config.crm, config.field_mappings
            )
            try:
                if crm_actions:
                    changed = _esp_members_changed(db, config, crm_actions, writer_factory, report)
                    _push_crm(db, writer, crm_rows, crm_actions, run_id, report, changed)
                record_refused_tasks(db, run_id)
                report.tasks_cleared = clear_executed_tasks(db, writer)
                report.assignments_removed = writer.remove_assignments(report.deleted_at_esp)
                if config.crm.mailing_reactions is not None:
                    report.reactions_written = push_reactions(db, writer)
            finally:
                if crm_writer is None:
                    writer.close()
    if report.account_errors:
        raise PushAccountFailed(
            [f"{name}: {message}" for name, message in sorted(report.account_errors.items())], report
        )
    return report


# each CRM contact's reaction to each campaign, where it changed since the push that last wrote it
CHANGED_REACTIONS = """
with reactions as (
    select
        recipients.crm_contact_id as contact_id,
        recipients.campaign_id as mailing_id,
        max(performance.campaign_title) as mailing_name,
        min(recipients.sent_at) as sent_at,
        bool_or(recipients.was_delivered) as delivered,
        max(recipients.bounce_type) as bounce,
        bool_or(recipients.unique_open) as opened,
        bool_or(recipients.clicked) as clicked,
        cast(sum(recipients.opens) as bigint) as opens,
        cast(sum(recipients.clicks) as bigint) as clicks,
        min(recipients.first_open_at) as first_open_at,
        min(recipients.first_click_at) as first_click_at,
        bool_or(recipients.unsubscribed_via_campaign) as unsubscribed
    from marts.fct_campaign_recipients as recipients
    left join marts.fct_campaign_performance as performance
        on recipients.esp_account = performance.esp_account and recipients.campaign_id = performance.campaign_id
    where recipients.crm_contact_id is not null
    group by recipients.crm_contact_id, recipients.campaign_id
),
hashed as (
    select *, md5(concat_ws('|', mailing_name, sent_at, delivered, bounce, opened, clicked, opens, clicks,
                            first_open_at, first_click_at, unsubscribed)) as state_hash
    from reactions
)
select hashed.* from hashed
left join ops.crm_mailing_reactions as written
    on hashed.contact_id = written.crm_contact_id and hashed.mailing_id = written.campaign_id
where written.state_hash is distinct from hashed.state_hash
order by hashed.contact_id, hashed.mailing_id
"""


def changed_reactions(db: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The reactions a push would write: new, or changed since the push that wrote them last."""
    try:
        return _fetch(db, CHANGED_REACTIONS, dict)
    except duckdb.CatalogException:  # no sync has built the campaign marts yet
        return []


def push_reactions(db: duckdb.DuckDBPyConnection, writer: CrmWriter) -> int:
    """Write each recipient's changed reaction to each mailing into the CRM's
    `crm.mailing_reactions`, then remember what was written, so the next push writes only
    what changed. The reference integration shows them per mailing inside the CRM."""
    reactions = changed_reactions(db)
    now = _now()
    rows = [{**{key: value for key, value in r.items() if key != "state_hash"}, "updated_at": now} for r in reactions]
    written = writer.write_reactions(rows)
    if reactions:
        db.executemany(
            "insert or replace into ops.crm_mailing_reactions values (?, ?, ?, ?)",
            [(r["contact_id"], r["mailing_id"], r["state_hash"], now) for r in reactions],
        )
    return written


def queue_is_behind(db: duckdb.DuckDBPyConnection) -> bool:
    """Was a decision recorded after the queue was built?"""
    row = db.execute(
        """
        select (select max(decided_at) from ops.decisions)
            > coalesce(
                (select min(queued_at) from marts.fct_pushback_queue),
                (select max(reconciled_at) from marts.fct_list_reconciliation)
            )
        """
    ).fetchone()
    return bool(row and row[0])


def refresh_queue_if_behind(config: MailbridgeConfig) -> bool:
    """Rebuild the queue (that model alone: the reconciliation it reads is unchanged) when a
    decision is newer than it, so a push and its dry run act on every decision made."""
    warehouse = config.warehouse_path()
    if not warehouse.exists():
        return False
    try:
        with duckdb.connect(str(warehouse), read_only=True) as db:
            if not queue_is_behind(db):
                return False
    except duckdb.CatalogException:
        return False  # no sync has built the queue yet
    from assets.resources import dbt_target_path, run_dbt_build

    # the syncs' target: their parse of the project serves this build too
    built = run_dbt_build(warehouse, dbt_target_path(warehouse), "queue-refresh", select="fct_pushback_queue")
    if built.returncode != 0:
        raise PushQueueError(
            "the push-back queue could not be rebuilt with the latest decisions; nothing was written. "
            f"dbt said: {_dbt_failure(built.stdout + built.stderr)}"
        )
    return True


class PushQueueError(Exception):
    """The queue could not be rebuilt with the latest decisions: nothing is pushed."""


def _dbt_failure(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fail" in line.lower()]
    return " | ".join((errors or lines)[-5:])[:1000] or "no output"


def _fetch(db: duckdb.DuckDBPyConnection, query: str, kind: Callable[..., Any]) -> list[Any]:
    cursor = db.execute(query)
    columns = [c[0] for c in cursor.description]
    return [kind(**dict(zip(columns, row, strict=True))) for row in cursor.fetchall()]


def _push_esp(
    db: duckdb.DuckDBPyConnection,
    config: MailbridgeConfig,
    actions: list[QueuedAction],
    run_id: str,
    report: PushReport,
    writer_factory: Callable[..., EspWriter] | None,
    allow_permanent_delete: bool,
) -> None:
    by_list: dict[tuple[str, str], list[QueuedAction]] = defaultdict(list)
    for action in actions:
        if action.action == "delete_permanent" and not allow_permanent_delete:
            # not attempted, so not recorded: it waits in the queue for a push with the flag
            report.add(action.list_link_id, action.action, action.action_source, "needs_flag", action.sample)
            continue
        by_list[(action.esp_account, action.esp_list_id)].append(action)
    is_blocked = blocklist_predicate(db)
    for (account_name, list_id), queued in by_list.items():
        account = config.account(account_name)
        factory = writer_factory or connector(account.type).writer()
        writer = factory(account, is_blocked=is_blocked, allow_permanent_delete=allow_permanent_delete)
        attempts = _plan(db, [_planned(a) for a in queued], run_id, f"esp:{account_name}/{list_id}")
        by_id = {action.action_id: action for action in queued}

        # recorded as each batch is answered: a push killed midway keeps what it wrote
        def settled(outcomes: dict[str, WriteOutcome], attempts: dict[str, str] = attempts) -> None:
            _record(db, [(attempts[action_id], outcome) for action_id, outcome in outcomes.items()])

        if account_name in report.account_errors:
            _account_refused(db, attempts, report.account_errors[account_name])
            for action in queued:
                report.add(action.list_link_id, action.action, action.action_source, "account_refused", action.sample)
            continue
        try:
            outcomes = _write_all(writer, list_id, queued, settled)
        except EspAccountError as refused:
            # the credentials, not the actions: they stay ready, and the account's other lists wait too
            report.account_errors[account_name] = str(refused)
            settled_ids = _settled(db, list(attempts.values()))
            waiting = {a: t for a, t in attempts.items() if t not in settled_ids}
            _account_refused(db, waiting, report.account_errors[account_name])
            for action_id in waiting:
                action = by_id[action_id]
                report.add(action.list_link_id, action.action, action.action_source, "account_refused", action.sample)
            report.write_requests += int(getattr(writer, "requests", 0))
            continue
        for action_id, outcome in outcomes.items():
            action = by_id[action_id]
            report.add(action.list_link_id, action.action, action.action_source, outcome.status, action.sample)
            if outcome.status == "sent" and action.action in ("delete", "delete_permanent") and action.crm_contact_id:
                report.deleted_at_esp.append((action.crm_contact_id, action.crm_list_id))
        report.write_requests += int(getattr(writer, "requests", 0))


# CRM actions that can write the ESP's status into the CRM
STATUS_TAKING_ACTIONS = frozenset({"set_status", "create_assignment", "create_contact"})


def _takes_esp_subscribe(action: CrmAction) -> bool:
    return action.action in STATUS_TAKING_ACTIONS and action.status is None and action.target_status == "subscribed"


def _esp_members_changed(
    db: duckdb.DuckDBPyConnection,
    config: MailbridgeConfig,
    actions: list[CrmAction],
    writer_factory: Callable[..., EspWriter] | None,
    report: PushReport,
) -> dict[str, WriteOutcome]:
    """The optimistic check on the ESP side: a CRM write that takes a subscribe from the ESP
    is skipped as stale when the member changed at the ESP since the sync read it (say, it
    unsubscribed meanwhile). Returns the outcome of each action skipped, by action id."""
    by_list: dict[tuple[str, str], list[CrmAction]] = defaultdict(list)
    links = {link.id: link for link in config.list_links}
    for action in actions:
        link = links.get(action.list_link_id)
        if link is not None and _takes_esp_subscribe(action):
            by_list[(link.esp_account, link.esp_list_id)].append(action)
    skipped: dict[str, WriteOutcome] = {}
    for (account_name, list_id), checked in by_list.items():
        row = db.execute(
            "select started_at from intermediate.int_esp__list_extractions where esp_account = ? and esp_list_id = ?",
            [account_name, list_id],
        ).fetchone()
        account = config.account(account_name)
        factory = writer_factory or connector(account.type).writer()
        esp = factory(account, is_blocked=lambda key: False, allow_permanent_delete=False)
        changed_since = getattr(esp, "changed_since", None)
        if row is None or row[0] is None or changed_since is None:
            continue
        try:
            changed = changed_since(list_id, row[0])
        except EspAccountError as refused:
            report.account_errors[account_name] = str(refused)
            changed = None
        except EspApiError as error:
            changed = None
            LOG.warning("could not check %s/%s for changes since the sync: %s", account_name, list_id, error)
        for action in checked:
            if changed is None:
                skipped[action.action_id] = WriteOutcome(
                    action.action_id, "failed", "esp_unchecked", "the ESP could not be asked whether the member changed"
                )
            elif action.email_address.strip().lower() in changed:
                skipped[action.action_id] = WriteOutcome(
                    action.action_id,
                    "stale",
                    "esp_member_changed",
                    "the ESP member changed since the sync: the next sync decides its status again",
                )
    return skipped


def _push_crm(
    db: duckdb.DuckDBPyConnection,
    writer: CrmWriter,
    rows: list[dict[str, Any]],
    actions: list[CrmAction],
    run_id: str,
    report: PushReport,
    skipped: dict[str, WriteOutcome] | None = None,
) -> None:
    planned = [
        (
            a.action_id,
            a.list_link_id,
            row["email_key"],
            a.action,
            f"{a.action} {a.email_address} in the CRM",
            a.crm_task if a.action_source in TASK_ANSWERING_SOURCES else None,
            None,
        )
        for row, a in zip(rows, actions, strict=True)
    ]
    attempts = _plan(db, planned, run_id, "crm")
    skipped = skipped or {}
    written = iter(writer.apply([action for action in actions if action.action_id not in skipped]))
    outcomes = [skipped.get(action.action_id) or next(written) for action in actions]
    _record(db, [(attempts[action.action_id], outcome) for action, outcome in zip(actions, outcomes, strict=True)])
    for row, action, outcome in zip(rows, actions, outcomes, strict=True):
        report.add(action.list_link_id, action.action, action.action_source, outcome.status, _sample(row))
    report.crm_statements += writer.statements


def _settled(db: duckdb.DuckDBPyConnection, attempt_ids: list[str]) -> set[str]:
    """The attempts among these the ESP has answered."""
    rows = db.execute(
        "select attempt_id from ops.pushback_outbox where attempt_id in (select unnest(?::varchar[])) "
        "and status <> 'planned'",
        [attempt_ids],
    ).fetchall()
    return {row[0] for row in rows}


def _account_refused(db: duckdb.DuckDBPyConnection, attempts: dict[str, str], message: str) -> None:
    """Attempts not made because the account's credentials were refused: failed, so the
    next push sends them again once the credentials are fixed."""
    outcome = WriteOutcome("", "failed", "account_refused", message)
    _record(db, [(attempt_id, outcome) for attempt_id in attempts.values()])


# a task word is answered when its action was sent, or was rejected for good: refused by the
# compliance rules (`refused`) or by the side it writes (`not_writable`, an ESP's 400). Either
# way the word is cleared; kept, it would run unasked once the state that stopped it changed
def task_answered(alias: str = "") -> str:
    """The outbox rows that answer their task word, as SQL."""
    return f"{alias}status in ('sent', 'confirmed', 'rejected')"


EXECUTED_TASKS = f"""
    select distinct outbox.list_link_id, outbox.email_key, outbox.crm_task,
        coalesce(reconciliation.crm_task_contact_id, reconciliation.crm_contact_id), reconciliation.crm_list_id
    from ops.pushback_outbox as outbox
    inner join marts.fct_list_reconciliation as reconciliation
        on outbox.list_link_id = reconciliation.list_link_id and outbox.email_key = reconciliation.email_key
    where outbox.crm_task is not null and {task_answered("outbox.")} and outbox.task_cleared_at is null
"""

REFUSED_TASKS = f"""
    select queue.action_id, queue.list_link_id, queue.email_key, queue.action, queue.email_address,
        queue.queue_reason, reconciliation.crm_task, queue.target
    from marts.fct_pushback_queue as queue
    inner join marts.fct_list_reconciliation as reconciliation
        on queue.list_link_id = reconciliation.list_link_id and queue.email_key = reconciliation.email_key
    where queue.queue_status = 'refused' and queue.action_source = 'crm_task' and queue.crm_target_status is null
        and reconciliation.crm_task is not null
        and queue.action_id not in (select action_id from ops.pushback_outbox where status in ({DONE_STATUSES}))
"""


def record_refused_tasks(db: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """A task word the compliance rules refused is answered: its refusal goes into the outbox
    (rejected, `refused`, with the reason) and the word is cleared with the executed ones. Kept,
    it would run unasked in a later push once the state that refused it has changed (a DOI
    asked before a newer opt-out, sent after the opt-out reached the ESP)."""
    rows = db.execute(REFUSED_TASKS).fetchall()
    if not rows:
        return 0
    attempts: dict[str, str] = {}
    for target in sorted({row[7] for row in rows}):
        planned = [
            (action_id, link, key, action, f"{action} {address} (asked by the CRM task word {task!r})", task, None)
            for action_id, link, key, action, address, _, task, row_target in rows
            if row_target == target
        ]
        attempts |= _plan(db, planned, run_id, target)
    _record(
        db,
        [
            (attempts[action_id], WriteOutcome(action_id, "rejected", "refused", reason))
            for action_id, _, _, _, _, reason, _, _ in rows
        ],
    )
    return len(rows)


def clear_executed_tasks(db: duckdb.DuckDBPyConnection, writer: CrmWriter) -> int:
    """Empty the CRM task column of every task whose action was sent, if it still says the
    same, and note it in the outbox. Tasks a killed push carried out but did not clear are
    cleared by the next one; until then the queue does not run them again."""
    executed = db.execute(EXECUTED_TASKS).fetchall()
    tasks = [(contact, crm_list, task) for _, _, task, contact, crm_list in executed if contact and crm_list]
    cleared = writer.clear_tasks(tasks)
    if executed:
        db.execute(
            f"""
            update ops.pushback_outbox set task_cleared_at = ?
            where crm_task is not null and {task_answered()} and task_cleared_at is null
                and concat(list_link_id, '|', email_key) in (select unnest(?::varchar[]))
            """,
            [_now(), [f"{row[0]}|{row[1]}" for row in executed]],
        )
    return cleared


def _crm_action(row: dict[str, Any], config: MailbridgeConfig) -> CrmAction:
    account = config.account(row["esp_account"])
    differences = row["field_differences"] or []
    esp_wins_only = row["action_source"] == "policy"
    contact = (
        {
            "email": row["contact_email"],
            "first_name": row["contact_first_name"],
            "last_name": row["contact_last_name"],
            "salutation": row["contact_salutation"],
            "modified_at": row["contact_modified_at"],
        }
        if row["contact_extracted"]
        else {}
    )
    # a person's decision names them as the author of what it writes
    decided_by = row["decided_by"] if row["action_source"] == "manual" else None
    return CrmAction(
        action_id=row["action_id"],
        action=row["action"],
        action_source=row["action_source"],
        list_link_id=row["list_link_id"],
        crm_list_id=row["crm_list_id"],
        crm_contact_id=row["crm_contact_id"],
        # an address changed at the ESP: the CRM takes the ESP's new one (the row names the CRM's)
        email_address=(
            row["esp_email_address"] or row["email_address"]
            if row["action"] == "update_crm_email"
            else row["email_address"]
        ),
        set_by=decided_by or f"mailbridge:{account.type}:{account.name}",
        status=row["crm_target_status"],
        decided_at=(row["decided_at"] or _now()) if row["crm_target_status"] else None,
        note=row["decision_note"],
        esp_status=row["esp_status"],
        esp_status_changed_at=row["esp_status_changed_at"],
        crm_task=row["crm_task"],
        extracted_status_value=row["extracted_status_value"],
        extracted_status_changed_at=row["extracted_status_changed_at"],
        extracted_contact=contact,
        esp_values={
            "first_name": row["esp_first_name"],
            "last_name": row["esp_last_name"],
            "salutation": row["esp_salutation"],
        },
        field_updates={d["field_name"]: d["value"] for d in differences if d["winner"] == "esp" or not esp_wins_only},
    )


def _sample(row: dict[str, Any]) -> str:
    return f"{row['email_address']} ({row['rule']})"


def _record(db: duckdb.DuckDBPyConnection, outcomes: list[tuple[str, WriteOutcome]]) -> None:
    """Attempt outcomes, (attempt id, outcome) each, in one statement: all of them or none."""
    if not outcomes:
        return
    columns: list[list[str | None]] = [[], [], [], []]
    for attempt_id, outcome in outcomes:
        for column, value in zip(
            columns, (attempt_id, outcome.status, outcome.error_code, outcome.error_message), strict=True
        ):
            column.append(value)
    db.execute(
        """
        update ops.pushback_outbox as outbox
        set status = answered.status, error_code = answered.error_code,
            error_message = answered.error_message, updated_at = ?
        from (
            select unnest(?::varchar[]) as attempt_id, unnest(?::varchar[]) as status,
                unnest(?::varchar[]) as error_code, unnest(?::varchar[]) as error_message
        ) as answered
        where outbox.attempt_id = answered.attempt_id
        """,
        [_now(), *columns],
    )


# an attempt as planned: (action id, list link, email key, action, payload summary, the CRM
# task word that asked for it, the former address it retires)
Planned = tuple[str, str, str, str, str, str | None, str | None]


def _planned(action: QueuedAction) -> Planned:
    summary = f"{action.action} {action.email_address}" + (
        f" (former {action.former_email_key})" if action.former_email_key else ""
    )
    if action.action == "delete_permanent":
        summary += " (irreversible: the ESP erases the member and its history)"
    task = action.crm_task if action.action_source in TASK_ANSWERING_SOURCES else None
    # mailbridge's own unsubscribe of a former address: an address change retires it (the
    # row of an address changed in the CRM is the new one; the write goes to the former)
    retired = None
    if action.action.startswith("change_address_") or (
        action.action == "unsubscribe" and action.rule == "email_changed_in_crm"
    ):
        retired = action.former_email_key
    elif action.action == "unsubscribe" and action.rule == "former_address_still_subscribed":
        retired = action.email_key
    return (action.action_id, action.list_link_id, action.email_key, action.action, summary, task, retired)


def _plan(db: duckdb.DuckDBPyConnection, planned: Sequence[Planned], run_id: str, target: str) -> dict[str, str]:
    """Record every attempt as planned before anything is sent: a killed push leaves a trace."""
    attempts = {action_id: uuid.uuid4().hex for action_id, *_ in planned}
    if not planned:
        return attempts
    action_ids, links, keys, actions, summaries, tasks, retired = (
        list(column) for column in zip(*planned, strict=True)
    )
    now = _now()
    db.execute(
        """
        insert into ops.pushback_outbox (
            attempt_id, action_id, run_id, target, list_link_id, email_key, action, payload_summary, status,
            error_code, error_message, attempted_at, updated_at, crm_task, retired_email_key
        )
        select
            unnest(?::varchar[]), unnest(?::varchar[]), ?, ?, unnest(?::varchar[]), unnest(?::varchar[]),
            unnest(?::varchar[]), unnest(?::varchar[]), 'planned', null, null, ?, ?, unnest(?::varchar[]),
            unnest(?::varchar[])
        """,
        [
            [attempts[a] for a in action_ids],
            *(action_ids, run_id, target, links, keys, actions, summaries, now, now, tasks, retired),
        ],
    )
    return attempts


RANK = {"sent": 0, "stale": 1, "failed": 2, "rejected": 3}


def _write_all(
    writer: EspWriter,
    list_id: str,
    queued: list[QueuedAction],
    settled: Callable[[dict[str, WriteOutcome]], None],
) -> dict[str, WriteOutcome]:
    """All writes of the queued actions. An action settles when every one of its writes has
    an answer, with its worst write's outcome; `settled` hears each batch of settled actions
    as the ESP answers. Transient failures get one more try within the run."""
    final: dict[str, WriteOutcome] = {}

    def send(actions: list[QueuedAction]) -> None:
        writes = [write for action in actions for write in action.writes()]
        expected = Counter(write.action_id for write in writes)
        heard: dict[str, list[WriteOutcome]] = defaultdict(list)

        def on_batch(outcomes: list[WriteOutcome]) -> None:
            done: dict[str, WriteOutcome] = {}
            for outcome in outcomes:
                heard[outcome.action_id].append(outcome)
                if len(heard[outcome.action_id]) == expected[outcome.action_id]:
                    done[outcome.action_id] = max(heard[outcome.action_id], key=lambda o: RANK[o.status])
            if done:
                final.update(done)
                settled(done)

        writer.write(list_id, writes, on_batch=on_batch)

    send(queued)
    again = [action for action in queued if final.get(action.action_id, _UNANSWERED).retryable]
    if again:
        send(again)
    missing = {a.action_id: _UNANSWERED for a in queued if a.action_id not in final}
    if missing:  # a writer that did not answer for some writes: sent again next run
        final.update(missing)
        settled(missing)
    return final


_UNANSWERED = WriteOutcome("", "failed", "no_answer", "the writer gave no outcome for this action")
