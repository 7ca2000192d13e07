"""The invariants, checked against the reference model after every push and every
completed sync → push → sync."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sandbox.compare import Difference
from sandbox.simulation.world import Lane, World

INVARIANTS = {
    "1": "an opted-out or blocklisted address is not subscribed at the ESP after a completed sync → push → sync, "
    "and mailbridge never sets it subscribed in the CRM",
    "2": "nothing is re-subscribed at the ESP except through pending",
    "3": "a newer real subscribe (DOI confirmed after every opt-out) is not lost",
    "4": "no write is repeated, and a no-change rerun sends nothing",
    "5": "every outbox action ends confirmed, rejected for a permanent reason, or failed (retried)",
    "6": "an incremental sync ends where a full sync of the same moment would (the reconciliation and the queue)",
}
OPTED_OUT_AT_ESP = ("unsubscribed", "cleaned")
# an answer that says "try again", never a permanent rejection
TRANSIENT_CODE = re.compile(
    r"transient|interrupt|no_answer|not_confirmed|timeout|too_many|unavailable|api_key|unauthori|forbidden|"
    r"credential|http_(401|403|408|429|5\d\d)"
)


@dataclass(frozen=True)
class Break:
    """One invariant break in one lane: which, where in the history, for which address, why."""

    invariant: str
    step: int
    lane: int
    seed: int
    token: str
    detail: str

    def line(self, prefix: str) -> str:
        return f"invariant {self.invariant} at step {self.step}: {prefix}-{self.token}@sim.example: {self.detail}"


@dataclass
class Snapshot:
    esp: dict[str, str]
    crm: list[dict[str, Any]]
    archived_from: dict[str, str]  # archived member → its last status before (as last seen)


def snapshot(world: World, lane: Lane) -> Snapshot:
    esp = world.esp_members(lane)
    archived_from = {
        key: world.last_status[(lane.esp_list, key)]
        for key, status in esp.items()
        if status == "archived" and (lane.esp_list, key) in world.last_status
    }
    return Snapshot(esp, world.crm_rows(lane), archived_from)


def check_push(world: World, lane: Lane, before: Snapshot, after: Snapshot, step: int, what: str) -> list[Break]:
    """Invariant 2 (ESP status changes of this push) and the CRM half of invariant 1."""
    breaks = []
    for key, status in after.esp.items():
        token = lane.token_of(key) or key
        prior = before.esp.get(key)
        if prior == "archived":
            prior = before.archived_from.get(key, prior)
        if status == "subscribed" and prior in OPTED_OUT_AT_ESP:
            breaks.append(
                Break("2", step, lane.index, lane.seed, token, f"{what} took the ESP member from {prior} to subscribed")
            )
    earlier = {(row["contact_id"], row["key"]): (row["status"], row["set_by"]) for row in before.crm}
    for row in after.crm:
        if row["canonical"] != "subscribed" or not str(row["set_by"] or "").startswith("mailbridge"):
            continue
        if earlier.get((row["contact_id"], row["key"])) == (row["status"], row["set_by"]):
            continue
        found = lane.token_of(row["key"])
        reason = lane.reference.must_not_be_subscribed(found) if found else None
        if reason and found not in lane.ever_poisoned:
            breaks.append(
                Break(
                    "1",
                    step,
                    lane.index,
                    lane.seed,
                    found or row["key"],
                    f"{what} set CRM contact {row['contact_id']} subscribed ({row['set_by']}), but {reason}",
                )
            )
    return breaks


def check_cycle(world: World, lane: Lane, step: int, *, complete: bool, outbox: list[dict[str, Any]]) -> list[Break]:
    """After a sync → push → sync: invariants 1 and 3 at the ESP (when the cycle completed
    without injected faults), 4 (no action written twice) and 5 (the outbox's end states)."""
    breaks = []
    esp = world.esp_members(lane)
    if complete:
        for token in lane.tokens:
            if token in lane.ever_poisoned:
                continue
            status = esp.get(lane.address(token).lower())
            reason = lane.reference.must_not_be_subscribed(token)
            if reason and status == "subscribed":
                breaks.append(
                    Break(
                        "1",
                        step,
                        lane.index,
                        lane.seed,
                        token,
                        f"subscribed at the ESP after sync → push → sync; {reason}",
                    )
                )
            kept = lane.reference.must_stay_subscribed(token)
            if kept and status != "subscribed":
                breaks.append(
                    Break("3", step, lane.index, lane.seed, token, f"{status or 'absent'} at the ESP, but {kept}")
                )
    mine = [row for row in outbox if row["list_link_id"] == lane.link_id]
    written = Counter(row["action_id"] for row in mine if row["status"] in ("sent", "confirmed"))
    for row in mine:
        token = lane.token_of(row["email_key"] or "") or str(row["email_key"])
        if row["status"] in ("planned", "sent"):
            breaks.append(
                Break(
                    "5",
                    step,
                    lane.index,
                    lane.seed,
                    token,
                    f"outbox {row['action']} ({row['target']}) still {row['status']} after sync → push → sync",
                )
            )
        elif row["status"] == "rejected" and TRANSIENT_CODE.search(str(row["error_code"] or "").lower()):
            breaks.append(
                Break(
                    "5",
                    step,
                    lane.index,
                    lane.seed,
                    token,
                    f"outbox {row['action']} rejected for good for a transient reason ({row['error_code']})",
                )
            )
        if written[row["action_id"]] > 1:
            written[row["action_id"]] = 0  # report once
            breaks.append(
                Break(
                    "4", step, lane.index, lane.seed, token, f"{row['action']} written more than once (one action id)"
                )
            )
    return breaks


def check_rerun(world: World, lane: Lane, step: int, rerun: list[dict[str, Any]], esp_writes: list[Any]) -> list[Break]:
    """Invariant 4: a push right after a completed sync → push → sync, with nothing new, writes nothing.
    An address the ESP was made to refuse in that push (esp_refuse_address), or whose CRM write
    that push left to the next one (stale: the ESP member changed since the sync, by that push's
    own address change, say) is the exception: what could not be written there, the rerun is the
    first push that can."""
    breaks = []
    refused_before = False
    for row in rerun:
        if row["list_link_id"] != lane.link_id:
            continue
        if str(row["email_key"] or "").lower() in lane.last_push_poison:
            refused_before = True
            continue
        token = lane.token_of(row["email_key"] or "") or str(row["email_key"])
        breaks.append(
            Break(
                "4",
                step,
                lane.index,
                lane.seed,
                token,
                f"a no-change rerun pushed {row['action']} ({row['target']}, {row['status']})",
            )
        )
    if not breaks and not refused_before:
        mine = [e for e in esp_writes if f"/lists/{lane.esp_list}" in e.path]
        if mine:
            breaks.append(
                Break("4", step, lane.index, lane.seed, "-", f"a no-change rerun sent {len(mine)} ESP write request(s)")
            )
    return breaks


def check_incremental_equals_full(lanes: list[Lane], step: int, found: list[Difference]) -> list[Break]:
    """Invariant 6: each row where the incremental sync's marts and the full sync's differ, as a
    break of the lane whose list link it belongs to."""
    breaks = []
    for difference in found:
        link = difference.row.get("list_link_id")
        address = str(difference.row.get("email_key") or difference.row.get("email_address") or "")
        for lane in lanes:
            if lane.link_id == link:
                token = lane.token_of(address) or address
                breaks.append(Break("6", step, lane.index, lane.seed, token, difference.line()[:500]))
    return breaks
