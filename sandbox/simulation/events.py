"""The simulation's events: what a seed does at each step, and the shared mailbridge schedule.

A seed's own events name addresses by token (`a3`, `a3x1` after an address change); its
lane renders a token as `<prefix>-<token>@sim.example`, so a replayed history is the same
whatever else runs beside it. Events are drawn from the seed's `random.Random` and the
lane's current state (so they are mostly meaningful), then recorded as concrete events:
a shrunk or replayed history applies them as they are, and one that no longer applies is
skipped by the world and left out of the reference model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# events at the CRM (SQL against the mapped tables)
CRM_KINDS = (
    "crm_optout",  # assignment status → unsubscribed word, status date now, set by a person (phone)
    "crm_subscribe",  # assignment status → subscribed word (created if missing)
    "crm_blocklist",  # the address goes on the blocklist
    "crm_email_change",  # the contact's address changes; the former one goes to the address history
    "crm_delete_contact",  # the contact row and its assignments are deleted
    "crm_duplicate",  # another contact with the same address (other id), in the list or not
    "crm_task",  # the assignment's task column gets a task word
)
# events at the ESP (the emulator's Mailchimp v3 API, with the account's key)
ESP_KINDS = (
    "esp_form_subscribe",  # PUT status pending: a web form starts double opt-in
    "esp_confirm",  # the subscriber clicks the DOI mail (the emulator's admin confirm)
    "esp_unsubscribe",  # PATCH status unsubscribed
    "esp_profile_edit",  # PATCH merge_fields: moves last_changed, not a status change
    "esp_hard_bounce",  # PATCH status cleaned
    "esp_address_change",  # PATCH email_address
    "esp_archive",  # DELETE member
    "esp_refuse_address",  # fault injection: the ESP refuses this address in the next push (poison)
)
# a seed's own mailbridge event
DECIDE_KINDS = ("decide",)
NOOP = "noop"
SEED_KINDS = CRM_KINDS + ESP_KINDS + DECIDE_KINDS

# shared steps: every lane of the world at once
SHARED_KINDS = (
    "sync_incremental",
    "sync_full",
    "push",
    "push_killed",
    "sync_push",  # sync → push → sync (verify): after it, the invariants are checked
    "fault_burst",  # the next shared step runs with an ESP fault
)
FAULT_BURSTS = ("esp_down_writes", "rate_limited_writes", "truncated_writes", "esp_down_member_reads")
DECIDE_ACTIONS = ("transmit", "start_doi", "unsubscribe", "update_fields", "delete", "set_status")
KILL_VARIANTS = ("before_send", "after_send")

SCHEDULE_SEED = "mailbridge-simulation-schedule-v1"


@dataclass(frozen=True)
class Event:
    """One event: its kind and its arguments (address tokens, words, picks)."""

    kind: str
    args: tuple[str, ...] = ()

    def describe(self, prefix: str = "s?") -> str:
        shown = [render(a, prefix) if _is_token(a) else a for a in self.args]
        return f"{self.kind}({', '.join(shown)})" if shown else self.kind


def _is_token(value: str) -> bool:
    return len(value) > 1 and value[0] == "a" and value[1].isdigit()


def render(token: str, prefix: str) -> str:
    """The address of a token in a lane's namespace."""
    return f"{prefix}-{token}@sim.example"


def shared_schedule(steps: int) -> list[Event | None]:
    """Which steps are shared mailbridge steps (and which): the same for every seed and
    prefix-stable (the first k steps of a longer run are those of a shorter one). Step 0 is
    the first full sync; the first shared steps tour every kind, so short runs (CI) see them
    all; the runner ends a run with one more sync → push → sync."""
    rng = random.Random(SCHEDULE_SEED)
    tour = [Event("sync_push"), Event("push_killed", ("after_send",)), Event("sync_push"), None, Event("push")]
    schedule: list[Event | None] = [Event("sync_full")] if steps else []
    since_shared, gap = 0, 2
    while len(schedule) < steps:
        previous = schedule[-1]
        if previous is not None and previous.kind == "fault_burst":
            # a burst lasts for the next shared step, which is always a sync → push → sync
            schedule.append(Event("sync_push"))
            since_shared = 0
            continue
        since_shared += 1
        if since_shared <= gap:
            schedule.append(None)
            continue
        since_shared, gap = 0, rng.randint(2, 3) if tour else rng.randint(3, 6)
        roll, burst, kill = rng.random(), rng.choice(FAULT_BURSTS), rng.choice(KILL_VARIANTS)
        if tour:
            planned = tour.pop(0)
            schedule.append(planned if planned is not None else Event("fault_burst", (burst,)))
        elif roll < 0.50:
            schedule.append(Event("sync_push"))
        elif roll < 0.62:
            schedule.append(Event("fault_burst", (burst,)))
        elif roll < 0.74:
            schedule.append(Event("push_killed", (kill,)))
        elif roll < 0.84:
            schedule.append(Event("sync_incremental"))
        elif roll < 0.92:
            schedule.append(Event("sync_full"))
        else:
            schedule.append(Event("push"))
    return schedule


@dataclass
class LaneView:
    """What a seed's event generator may look at: its own list on both sides, by token."""

    crm_contacts: dict[str, list[str]]  # token → statuses of its contacts' assignments ('' = none)
    esp_members: dict[str, str]  # token → member status at the ESP
    tokens: list[str]  # every token the lane has used, in order of creation
    blocked: set[str] = field(default_factory=set)


class EventGenerator:
    """Draws a seed's events from its own random stream and its lane's state."""

    WEIGHTS: dict[str, int] = {  # noqa: RUF012
        "crm_optout": 10,
        "crm_subscribe": 6,
        "crm_blocklist": 2,
        "crm_email_change": 3,
        "crm_delete_contact": 2,
        "crm_duplicate": 3,
        "crm_task": 5,
        "esp_form_subscribe": 6,
        "esp_confirm": 8,
        "esp_unsubscribe": 9,
        "esp_profile_edit": 8,
        "esp_hard_bounce": 3,
        "esp_address_change": 3,
        "esp_archive": 2,
        "esp_refuse_address": 2,
        "decide": 6,
        NOOP: 4,
    }

    def __init__(self, seed: int, task_words: list[str]) -> None:
        self.rng = random.Random(seed)
        self.task_words = task_words
        self.changes = 0

    def next_event(self, view: LaneView) -> Event:
        kinds = list(self.WEIGHTS)
        kind = self.rng.choices(kinds, weights=[self.WEIGHTS[k] for k in kinds])[0]
        rng = self.rng
        crm_tokens = sorted(view.crm_contacts, key=view.tokens.index) or view.tokens
        esp_tokens = sorted(view.esp_members, key=view.tokens.index)
        pending = [t for t in esp_tokens if view.esp_members[t] == "pending"]
        any_token = rng.choice(view.tokens)
        crm_token = rng.choice(crm_tokens)
        esp_token = rng.choice(esp_tokens) if esp_tokens else any_token
        pick = str(rng.randrange(3))
        word = rng.choice(self.task_words)
        action = rng.choice(DECIDE_ACTIONS)
        if kind == "crm_optout":
            return Event(kind, (crm_token, pick))
        if kind == "crm_subscribe":
            return Event(kind, (crm_token, pick))
        if kind == "crm_blocklist":
            return Event(kind, (any_token,))
        if kind == "crm_email_change":
            self.changes += 1
            return Event(kind, (crm_token, f"{crm_token.split('x')[0]}x{self.changes}", pick))
        if kind in ("crm_delete_contact", "crm_task"):
            return Event(kind, (crm_token, pick, word) if kind == "crm_task" else (crm_token, pick))
        if kind == "crm_duplicate":
            return Event(kind, (crm_token, rng.choice(("in_list", "outside_list"))))
        if kind == "esp_form_subscribe":
            return Event(kind, (any_token,))
        if kind == "esp_confirm":
            return Event(kind, (rng.choice(pending) if pending else esp_token,))
        if kind in ("esp_unsubscribe", "esp_hard_bounce", "esp_archive", "esp_refuse_address"):
            return Event(kind, (esp_token,))
        if kind == "esp_profile_edit":
            return Event(kind, (esp_token, rng.choice(("Anna", "Bernd", "Carla", "Dora"))))
        if kind == "esp_address_change":
            self.changes += 1
            return Event(kind, (esp_token, f"{esp_token.split('x')[0]}x{self.changes}"))
        if kind == "decide":
            return Event(kind, (any_token, action))
        return Event(NOOP)
