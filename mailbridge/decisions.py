"""Manual decisions: what a person decided for one address on one list, on one state."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from mailbridge.email_key import InvalidEmail, email_key
from mailbridge.warehouse_lock import DEFAULT_WAIT_SECONDS, hold_warehouse
from pipelines.crm.writer import CRM_ACTIONS

# delete_permanent erases the member irreversibly: a push runs it only with --allow-permanent-delete
ESP_ACTIONS = ("transmit", "start_doi", "unsubscribe", "update_fields", "delete", "delete_permanent")
DECIDABLE_ACTIONS = ESP_ACTIONS + CRM_ACTIONS


class DecisionError(ValueError):
    """A decision that cannot be recorded; the message says why and what to do."""


@dataclass(frozen=True)
class Decision:
    decision_id: str
    list_link_id: str
    email_key: str
    action: str
    state_fingerprint: str
    result: str
    warning: str | None


def record_decision(
    warehouse: Path,
    address: str,
    list_link_id: str,
    action: str,
    decided_by: str,
    note: str | None = None,
    *,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
) -> Decision:
    """Record a decision on the address's current reconciliation state in the list link."""
    if action not in DECIDABLE_ACTIONS:
        raise DecisionError(f"unknown action {action!r}; choose one of {', '.join(DECIDABLE_ACTIONS)}")
    try:
        key = email_key(address)
    except InvalidEmail as error:
        raise DecisionError(
            f"{address!r} is not a valid address ({error.reason}): nothing can be decided for it"
        ) from None
    # decided on the state the last sync left, not on one a running sync is rebuilding
    with (
        hold_warehouse(warehouse, f"decide {action} on {list_link_id}", timeout=wait_seconds),
        duckdb.connect(str(warehouse)) as db,
    ):
        row = db.execute(
            "select state_fingerprint, result, esp_status, crm_status, rule from marts.fct_list_reconciliation "
            "where list_link_id = ? and email_key = ?",
            [list_link_id, key],
        ).fetchone()
        if row is None:
            links = [
                r[0] for r in db.execute("select distinct list_link_id from marts.fct_list_reconciliation").fetchall()
            ]
            raise DecisionError(
                f"list link {list_link_id!r} has no reconciliation row for {key}; "
                f"list links: {', '.join(sorted(links)) or 'none'} (run a sync first)"
            )
        fingerprint, result, esp_status, crm_status, rule = row
        decided_at = datetime.now(UTC)
        decision_id = hashlib.sha256(
            f"{list_link_id}|{key}|{action}|{fingerprint}|{decided_at.isoformat()}".encode()
        ).hexdigest()[:32]
        db.execute(
            "insert into ops.decisions (decision_id, list_link_id, email_key, action, state_fingerprint, "
            "decided_by, decided_at, note) values (?, ?, ?, ?, ?, ?, ?, ?)",
            [decision_id, list_link_id, key, action, fingerprint, decided_by, decided_at, note],
        )
        # the queue refuses by the same rules (intermediate.int_pushback__refusals)
        refusal = db.execute(
            "select reason from intermediate.int_pushback__refusals where action = ? and ("
            "(refused_field = 'result' and refused_value = ?) or (refused_field = 'esp_status' and refused_value = ?)"
            " or (refused_field = 'crm_status' and refused_value = ?) or (refused_field = 'rule' and refused_value = ?)"
            ") order by priority limit 1",
            [action, result, esp_status, crm_status, rule],
        ).fetchone()
        # the queue's definition of a compliance action (fct_pushback_queue)
        compliance = db.execute(
            "select recommended_action from marts.fct_list_reconciliation where list_link_id = ? and email_key = ? "
            "and recommended_action <> ? and (recommended_action = 'unsubscribe' or ("
            "recommended_action in ('set_status', 'mark_bounced') "
            "and resolved_status in ('unsubscribed', 'bounced_hard', 'bounced')))",
            [list_link_id, key, action],
        ).fetchone()
    warnings = []
    if refusal:
        warnings.append(f"the queue will refuse this {action}: {refusal[0]}")
    if compliance:
        warnings.append(f"the compliance action {compliance[0]} runs as well: a decision joins it, never replaces it")
    warning = "; ".join(warnings) or None
    return Decision(decision_id, list_link_id, key, action, fingerprint, result, warning)
