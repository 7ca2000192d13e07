"""The simulated world: one Mailchimp emulator, one SQLite CRM, one warehouse and one
mailbridge.yaml holding a list link per lane; events applied through each side's real
interface, and mailbridge run through its public entry points."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import polars as pl
import sqlalchemy as sa
import yaml

from mailbridge.config import WAREHOUSE_ENV, MailbridgeConfig, load_config
from mailbridge.decisions import DecisionError, record_decision
from pipelines.mailchimp.helpers import subscriber_hash
from pipelines.writers import BatchCallback, EspWrite, WriteOutcome
from sandbox.compare import Difference, mart_differences
from sandbox.crm_db import crm_tables, write_crm
from sandbox.mailchimp.app import MailchimpEmulator
from sandbox.scenario import TABLE_SCHEMAS, EspAccountSpec, EspListSpec, LinkSpec, Scenario
from sandbox.server import BackgroundServer
from sandbox.simulation.events import Event, LaneView, render
from sandbox.simulation.reference import ReferenceModel

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "sim"
API_KEY = "sandbox0simulation0000000000000-us1"
KEY_ENV = "MAILBRIDGE_SIMULATION_KEY"
DOMAIN = "@sim.example"
ESP_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def utc_now() -> datetime:
    """The real clock, to the second: both systems stamp with it, so event times are comparable."""
    return datetime.now(UTC).replace(microsecond=0)


class SyncFailed(Exception):
    """A sync (extraction or dbt build) did not complete."""


@dataclass
class Lane:
    """One seed in the world: its lists, its address namespace, its history and its model."""

    index: int
    seed: int
    prefix: str  # addresses are <prefix>-<token>@sim.example
    replay: list[Event | None] | None = None  # a given history (shrinking, replay) instead of drawing
    reference: ReferenceModel = field(default_factory=ReferenceModel)
    history: list[tuple[int, Event, bool]] = field(default_factory=list)  # (step, event, applied)
    tokens: list[str] = field(default_factory=list)
    poison: set[str] = field(default_factory=set)  # addresses the ESP refuses in the next push
    ever_poisoned: set[str] = field(default_factory=set)  # tokens: a refused write is no mailbridge fault
    # addresses the ESP refused in the latest push: what it could not write there, a rerun may
    last_push_poison: set[str] = field(default_factory=set)

    @property
    def link_id(self) -> str:
        return f"l{self.index}"

    @property
    def crm_list(self) -> str:
        return f"L{self.index}"

    @property
    def esp_list(self) -> str:
        return f"list{self.index:05d}"

    def address(self, token: str) -> str:
        return render(token, self.prefix)

    def token_of(self, address: str) -> str | None:
        address = address.strip().lower()
        start = self.prefix.lower() + "-"
        if address.startswith(start) and address.endswith(DOMAIN):
            return address[len(start) : -len(DOMAIN)]
        return None


# ------------------------------------------------------------------ the initial world

INITIAL_CASES = {
    "both_subscribed": 6,
    "crm_only_subscribed": 2,
    "esp_only_subscribed": 2,
    "both_unsubscribed": 1,
    "crm_optout_newer": 1,
    "esp_optout_newer": 1,
    "esp_pending": 1,
}
FIRST_NAMES = ("Anna", "Bernd", "Carla", "Dora", "Emil", "Frida", "Gustav", "Heidi", "Ida", "Jonas")


def initial_rows(lane: Lane, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """A small world for one lane, drawn from its seed; its consent history goes to the model."""
    rng = random.Random(f"world-{lane.seed}")
    rows: dict[str, list[dict[str, Any]]] = {"crm_contacts": [], "crm_assignments": [], "esp_members": []}
    rows["crm_lists"] = [{"list_id": lane.crm_list, "name": f"simulation lane {lane.index} (seed {lane.seed})"}]
    for n in range(rng.randint(8, 14)):
        token = f"a{n}"
        lane.tokens.append(token)
        address = lane.address(token)
        case = rng.choices(list(INITIAL_CASES), weights=list(INITIAL_CASES.values()))[0]
        first, last = rng.choice(FIRST_NAMES), f"Sim{n}"
        subscribed_at = now - timedelta(days=60) + timedelta(hours=n)
        opted_out_at = now - timedelta(days=10) + timedelta(hours=n)
        crm_status = esp_status = None
        crm_at = esp_at = subscribed_at
        if case == "both_subscribed":
            crm_status = esp_status = "subscribed"
        elif case == "crm_only_subscribed":
            crm_status = "subscribed"
        elif case == "esp_only_subscribed":
            esp_status = "subscribed"
        elif case == "both_unsubscribed":
            crm_status, esp_status, crm_at, esp_at = "unsubscribed", "unsubscribed", opted_out_at, opted_out_at
        elif case == "crm_optout_newer":
            crm_status, esp_status, crm_at = "unsubscribed", "subscribed", opted_out_at
        elif case == "esp_optout_newer":
            crm_status, esp_status, esp_at = "subscribed", "unsubscribed", opted_out_at
        elif case == "esp_pending":
            crm_status, esp_status, esp_at = "subscribed", "pending", opted_out_at
        # the source says where the evidence lives: deleting the CRM contact deletes the CRM's
        side = "esp" if esp_status is not None else "crm"
        if crm_status is not None or esp_status == "subscribed":
            lane.reference.record(-1, subscribed_at, token, "subscribe", f"{side}:initial:{case}")
        if "unsubscribed" in (crm_status, esp_status):
            side = "esp" if esp_status == "unsubscribed" else "crm"
            lane.reference.record(-1, opted_out_at, token, "optout", f"{side}:initial:{case}")
        if crm_status is not None:
            contact_id = lane.index * 1000 + n + 1
            rows["crm_contacts"].append(
                {
                    "contact_id": contact_id,
                    "email": address,
                    "first_name": first,
                    "last_name": last,
                    "modified_at": subscribed_at,
                }
            )
            rows["crm_assignments"].append(
                {
                    "contact_id": contact_id,
                    "list_id": lane.crm_list,
                    "status": crm_status,
                    "status_changed_at": crm_at,
                    "status_set_by": "initial",
                }
            )
        if esp_status is not None:
            rows["esp_members"].append(
                {
                    "account": ACCOUNT,
                    "list_id": lane.esp_list,
                    "email": address,
                    "status": esp_status,
                    "last_changed": esp_at,
                    "first_name": first,
                    "last_name": last,
                    "timestamp_signup": subscribed_at,
                    "timestamp_opt": subscribed_at if esp_status != "pending" else None,
                }
            )
    return rows


def build_scenario(lanes: Sequence[Lane], now: datetime) -> Scenario:
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_SCHEMAS}
    for lane in lanes:
        for name, lane_rows in initial_rows(lane, now).items():
            rows[name].extend(lane_rows)
    tables = {
        name: pl.DataFrame(rows[name], schema=schema, orient="row") if rows[name] else pl.DataFrame(schema=schema)
        for name, schema in TABLE_SCHEMAS.items()
    }
    account = EspAccountSpec(
        ACCOUNT, "mailchimp", API_KEY, tuple(EspListSpec(lane.esp_list, f"lane {lane.index}") for lane in lanes)
    )
    links = [LinkSpec(lane.link_id, lane.crm_list, ACCOUNT, lane.esp_list) for lane in lanes]
    return Scenario("simulation", now, [account], links, tables)


def write_config(folder: Path, base_url: str, lanes: Sequence[Lane], policy: dict[str, Any]) -> Path:
    """A mailbridge.yaml: the demo's CRM mapping, one account, one list link per lane."""
    demo = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))
    crm = dict(demo["crm"])
    crm["url"] = f"sqlite:///{folder / 'crm.sqlite'}"
    raw = {
        "esp_accounts": [
            {"name": ACCOUNT, "type": "mailchimp", "api_key_env": KEY_ENV, "base_url": base_url, "max_connections": 10}
        ],
        "list_links": [
            {"id": lane.link_id, "crm_list_id": lane.crm_list, "esp_account": ACCOUNT, "esp_list_id": lane.esp_list}
            for lane in lanes
        ],
        "crm": crm,
        "policy": policy,
        # a fault burst exhausts retries quickly: the simulation wants the outcome, not the wait
        "extraction": {"max_retries": 1, "backoff_seconds": 0.01, "max_retry_after_seconds": 0.1},
        "warehouse": str(folder / "warehouse.duckdb"),
    }
    path = folder / "mailbridge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
    return path


def dbt_build(
    warehouse: Path, target_path: Path, run_id: str, *, full_refresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """`dbt build` as a sync runs it (models and data tests; a full sync's with `--full-refresh`),
    without the unit tests of the rules: they do not read the warehouse, and the default test
    suite runs them."""
    from assets.resources import run_dbt_build

    return run_dbt_build(warehouse, target_path, run_id, unit_tests=False, full_refresh=full_refresh)


# ------------------------------------------------------------------ ESP writers for the push


def fast_writer_factory(kill: Killer | None = None) -> Callable[..., Any]:
    """The account's real writer with short retries; with `kill`, it dies after a first batch."""
    from pipelines.http import RetryPolicy
    from pipelines.registry import connector

    def factory(account: Any, **options: Any) -> Any:
        writer_class = connector(account.type).writer()
        retry = RetryPolicy(max_retries=1, backoff_seconds=0.01, max_retry_after_seconds=0.1)
        writer = writer_class(account, retry=retry, **options)
        return writer if kill is None else KilledWriter(writer, kill)

    return factory


@dataclass
class Killer:
    """A push killed between batches, per list so that each lane sees the same kill:
    the first batch of every list is written and recorded; with `after_send` the second
    batch reaches the ESP but its answer is never recorded; nothing after that is sent."""

    variant: str
    batch: int = 2
    dead_lists: set[str] = field(default_factory=set)


class KilledWriter:
    def __init__(self, inner: Any, killer: Killer) -> None:
        self.inner = inner
        self.killer = killer
        self.requests = 0

    def write(self, list_id: str, writes: Sequence[EspWrite], on_batch: BatchCallback | None = None) -> Any:
        if list_id in self.killer.dead_lists:
            return []
        self.killer.dead_lists.add(list_id)
        first, second = list(writes[: self.killer.batch]), list(writes[self.killer.batch : 2 * self.killer.batch])
        outcomes: list[WriteOutcome] = self.inner.write(list_id, first, on_batch)
        if self.killer.variant == "after_send" and second:
            self.inner.write(list_id, second, None)
        self.requests = int(getattr(self.inner, "requests", 0))
        return outcomes


# ------------------------------------------------------------------ the world


class World:
    """Every lane's lists in one emulator, one CRM and one warehouse."""

    def __init__(self, folder: Path, lanes: Sequence[Lane], policy: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.lanes = list(lanes)
        folder.mkdir(parents=True, exist_ok=True)
        now = utc_now()
        scenario = build_scenario(self.lanes, now)
        self.emulator = MailchimpEmulator.from_scenario(scenario)
        self.server = BackgroundServer(self.emulator.app).start()
        self.base_url = f"{self.server.url}/3.0"
        self.previous_env = {name: os.environ.get(name) for name in (KEY_ENV, WAREHOUSE_ENV)}
        os.environ[KEY_ENV] = API_KEY
        os.environ[WAREHOUSE_ENV] = str(folder / "warehouse.duckdb")
        os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
        self.config: MailbridgeConfig = load_config(
            write_config(folder, self.base_url, self.lanes, policy or {"transmit_new_members": True})
        )
        self.crm_url = self.config.crm.connection_url(self.config.base_dir)
        write_crm(scenario.tables, self.crm_url, self.config.crm)
        self.engine = sa.create_engine(self.crm_url)
        self.tables = crm_tables(self.config.crm, sa.MetaData())
        self.columns = {entity: getattr(self.config.crm, entity).columns for entity in self.tables}
        self.canonical = dict(self.config.crm.status_values)
        self.task_actions = dict(self.config.crm.task_values)
        self.api = httpx.Client(base_url=self.base_url + "/", auth=(ACCOUNT, API_KEY), timeout=30)
        self.admin = httpx.Client(base_url=self.server.url + "/", timeout=30)
        self.last_status: dict[tuple[str, str], str] = {}  # (list, key) → last status other than archived
        self.runs = 0

    def close(self) -> None:
        self.api.close()
        self.admin.close()
        self.engine.dispose()
        self.server.stop()
        for name, value in self.previous_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @property
    def warehouse(self) -> Path:
        return self.config.warehouse_path()

    def run_id(self, what: str) -> str:
        self.runs += 1
        return f"sim-{self.runs:04d}-{what}-{uuid.uuid4().hex[:6]}"

    # -- reading both sides -------------------------------------------------------

    def esp_members(self, lane: Lane) -> dict[str, str]:
        """email key → status of the lane's ESP list, read from the emulator's state."""
        state = self.emulator.state
        with state.lock:
            members = state.account_named(ACCOUNT).lists[lane.esp_list].members
            current = {m.email_address.strip().lower(): m.status for m in members.values()}
        for key, status in current.items():
            if status != "archived":
                self.last_status[(lane.esp_list, key)] = status
        return current

    def crm_rows(self, lane: Lane) -> list[dict[str, Any]]:
        """The lane's contacts (by address namespace) and their assignment on its list."""
        contacts, assignments = self.tables["contacts"], self.tables["assignments"]
        c, a = self.columns["contacts"], self.columns["assignments"]
        query = (
            sa.select(
                contacts.c[c["contact_id"]].label("contact_id"),
                contacts.c[c["email"]].label("email"),
                assignments.c[a["status"]].label("status"),
                assignments.c[a["status_set_by"]].label("set_by"),
                assignments.c[a["status_changed_at"]].label("status_at"),
            )
            .select_from(
                contacts.outerjoin(
                    assignments,
                    sa.and_(
                        assignments.c[a["contact_id"]] == contacts.c[c["contact_id"]],
                        assignments.c[a["list_id"]] == lane.crm_list,
                    ),
                )
            )
            .where(contacts.c[c["email"]].like(f"{lane.prefix}-%"))
            .order_by(contacts.c[c["contact_id"]])
        )
        with self.engine.connect() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        for row in rows:
            row["key"] = str(row["email"]).strip().lower()
            row["canonical"] = self.canonical.get(row["status"]) if row["status"] is not None else None
        return rows

    def view(self, lane: Lane) -> LaneView:
        crm: dict[str, list[str]] = {}
        for row in self.crm_rows(lane):
            token = lane.token_of(row["key"])
            if token is not None:
                crm.setdefault(token, []).append(row["canonical"] or "")
                if token not in lane.tokens:
                    lane.tokens.append(token)
        esp = {}
        for key, status in self.esp_members(lane).items():
            token = lane.token_of(key)
            if token is not None:
                esp[token] = status
                if token not in lane.tokens:
                    lane.tokens.append(token)
        return LaneView(crm_contacts=crm, esp_members=esp, tokens=list(lane.tokens))

    # -- applying a seed's event ----------------------------------------------------

    def apply(self, lane: Lane, event: Event, seq: int) -> bool:
        """Apply one event through the side's real interface; False when it does not apply
        (then the reference model does not hear of it)."""
        handler = getattr(self, f"_{event.kind}", None)
        if handler is None:
            return False
        applied: bool = handler(lane, seq, *event.args)
        for token in event.args:
            if token.startswith("a") and token[1:2].isdigit() and token not in lane.tokens:
                lane.tokens.append(token)
        return applied

    def _noop(self, lane: Lane, seq: int) -> bool:
        return False

    # CRM ------------------------------------------------------------------------

    def _contacts(self, connection: sa.Connection, address: str) -> list[Any]:
        contacts, c = self.tables["contacts"], self.columns["contacts"]
        query = (
            sa.select(contacts.c[c["contact_id"]])
            .where(sa.func.lower(contacts.c[c["email"]]) == address.lower())
            .order_by(contacts.c[c["contact_id"]])
        )
        return [row[0] for row in connection.execute(query)]

    def _picked(self, connection: sa.Connection, lane: Lane, token: str, pick: str) -> Any | None:
        ids = self._contacts(connection, lane.address(token))
        return ids[int(pick) % len(ids)] if ids else None

    def _assignment_where(self, lane: Lane, contact_id: Any) -> Any:
        assignments, a = self.tables["assignments"], self.columns["assignments"]
        return sa.and_(assignments.c[a["contact_id"]] == contact_id, assignments.c[a["list_id"]] == lane.crm_list)

    def _set_assignment(self, lane: Lane, token: str, pick: str, status: str, set_by: str, create: bool) -> bool:
        assignments, a = self.tables["assignments"], self.columns["assignments"]
        word = self.config.crm.status_value(status)
        now = utc_now().replace(tzinfo=None)
        with self.engine.begin() as connection:
            contact_id = self._picked(connection, lane, token, pick)
            if contact_id is None:
                return False
            values = {a["status"]: word, a["status_changed_at"]: now, a["status_set_by"]: set_by}
            updated = connection.execute(
                assignments.update().where(self._assignment_where(lane, contact_id)).values(values)
            ).rowcount
            if not updated:
                if not create:
                    return False
                connection.execute(
                    assignments.insert().values({a["contact_id"]: contact_id, a["list_id"]: lane.crm_list, **values})
                )
        return True

    def _crm_optout(self, lane: Lane, seq: int, token: str, pick: str) -> bool:
        if not self._set_assignment(lane, token, pick, "unsubscribed", "person:phone", create=False):
            return False
        lane.reference.record(seq, utc_now(), token, "optout", "crm:phone")
        return True

    def _crm_subscribe(self, lane: Lane, seq: int, token: str, pick: str) -> bool:
        if not self._set_assignment(lane, token, pick, "subscribed", "person:crm_staff", create=True):
            return False
        lane.reference.record(seq, utc_now(), token, "subscribe", "crm:staff")
        return True

    def _crm_blocklist(self, lane: Lane, seq: int, token: str) -> bool:
        blocklist, b = self.tables["blocklist"], self.columns["blocklist"]
        address = lane.address(token)
        with self.engine.begin() as connection:
            exists = connection.execute(
                sa.select(sa.func.count()).where(sa.func.lower(blocklist.c[b["email"]]) == address)
            ).scalar()
            if exists:
                return False
            connection.execute(
                blocklist.insert().values(
                    {b["email"]: address, b["blocked_at"]: utc_now().replace(tzinfo=None), b["reason"]: "simulation"}
                )
            )
        lane.reference.block(seq, utc_now(), token)
        return True

    def _crm_email_change(self, lane: Lane, seq: int, token: str, new_token: str, pick: str) -> bool:
        contacts, c = self.tables["contacts"], self.columns["contacts"]
        now = utc_now().replace(tzinfo=None)
        with self.engine.begin() as connection:
            contact_id = self._picked(connection, lane, token, pick)
            if contact_id is None or self._contacts(connection, lane.address(new_token)):
                return False
            connection.execute(
                contacts.update()
                .where(contacts.c[c["contact_id"]] == contact_id)
                .values({c["email"]: lane.address(new_token), c["modified_at"]: now})
            )
            if "email_history" in self.tables:
                history, h = self.tables["email_history"], self.columns["email_history"]
                connection.execute(
                    history.insert().values(
                        {h["contact_id"]: contact_id, h["email"]: lane.address(token), h["valid_to"]: now}
                    )
                )
        lane.reference.carry(seq, utc_now(), token, new_token, "crm:email_change")
        return True

    def _crm_delete_contact(self, lane: Lane, seq: int, token: str, pick: str) -> bool:
        contacts, c = self.tables["contacts"], self.columns["contacts"]
        assignments, a = self.tables["assignments"], self.columns["assignments"]
        with self.engine.begin() as connection:
            contact_id = self._picked(connection, lane, token, pick)
            if contact_id is None:
                return False
            connection.execute(assignments.delete().where(assignments.c[a["contact_id"]] == contact_id))
            connection.execute(contacts.delete().where(contacts.c[c["contact_id"]] == contact_id))
            left = self._contacts(connection, lane.address(token))
        lane.reference.contact_deleted(seq, utc_now(), token, last_one=not left)
        return True

    def _crm_duplicate(self, lane: Lane, seq: int, token: str, mode: str) -> bool:
        contacts, c = self.tables["contacts"], self.columns["contacts"]
        assignments, a = self.tables["assignments"], self.columns["assignments"]
        now = utc_now().replace(tzinfo=None)
        with self.engine.begin() as connection:
            originals = self._contacts(connection, lane.address(token))
            if not originals:
                return False
            original = (
                connection.execute(sa.select(contacts).where(contacts.c[c["contact_id"]] == originals[0]))
                .mappings()
                .one()
            )
            new_id = (connection.execute(sa.select(sa.func.max(contacts.c[c["contact_id"]]))).scalar() or 0) + 1
            row = {key: value for key, value in original.items() if key != c.get("needs_review")}
            row[c["contact_id"]] = new_id
            row[c["modified_at"]] = now
            connection.execute(contacts.insert().values(row))
            if mode == "in_list":
                connection.execute(
                    assignments.insert().values(
                        {
                            a["contact_id"]: new_id,
                            a["list_id"]: lane.crm_list,
                            a["status"]: self.config.crm.status_value("subscribed"),
                            a["status_changed_at"]: now,
                            a["status_set_by"]: "web:shop_signup",
                        }
                    )
                )
        if mode == "in_list":
            lane.reference.record(seq, utc_now(), token, "subscribe", "crm:duplicate_signup")
        else:
            lane.reference.touch(seq, token, "crm:duplicate")
        return True

    def _crm_task(self, lane: Lane, seq: int, token: str, pick: str, word: str) -> bool:
        assignments, a = self.tables["assignments"], self.columns["assignments"]
        with self.engine.begin() as connection:
            contact_id = self._picked(connection, lane, token, pick)
            if contact_id is None:
                return False
            updated = connection.execute(
                assignments.update().where(self._assignment_where(lane, contact_id)).values({a["task"]: word})
            ).rowcount
        if not updated:
            return False
        if self.task_actions.get(word) == "unsubscribe":
            lane.reference.record(seq, utc_now(), token, "optout", f"crm:task:{word}")
        elif self.task_actions.get(word) == "delete":
            lane.reference.removal_requested(seq, token, f"crm:task:{word}")
        else:
            lane.reference.touch(seq, token, f"crm:task:{word}")
        return True

    # ESP ------------------------------------------------------------------------

    def _member_path(self, lane: Lane, token: str) -> str:
        return f"lists/{lane.esp_list}/members/{subscriber_hash(lane.address(token))}"

    def _esp_status(self, lane: Lane, token: str) -> str | None:
        response = self.api.get(self._member_path(lane, token))
        return str(response.json()["status"]) if response.status_code == 200 else None

    def _esp_form_subscribe(self, lane: Lane, seq: int, token: str) -> bool:
        if self._esp_status(lane, token) in ("subscribed", "pending"):
            return False  # the form says "already subscribed" / "check your inbox"
        body = {"email_address": lane.address(token), "status": "pending", "status_if_new": "pending"}
        if self.api.put(self._member_path(lane, token), json=body).status_code != 200:
            return False
        lane.reference.signed_up(seq, token, "esp:form_pending")
        return True

    def _esp_confirm(self, lane: Lane, seq: int, token: str) -> bool:
        path = f"_sandbox/accounts/{ACCOUNT}/lists/{lane.esp_list}/members/{subscriber_hash(lane.address(token))}"
        response = self.admin.post(path + "/confirm")
        if response.status_code != 200:
            return False
        confirmed_at = datetime.fromisoformat(response.json()["last_changed"])
        lane.reference.record(seq, confirmed_at, token, "subscribe", "esp:doi_confirmed", doi=True)
        return True

    def _patch(self, lane: Lane, token: str, body: dict[str, Any]) -> dict[str, Any] | None:
        response = self.api.patch(self._member_path(lane, token), json=body)
        return dict(response.json()) if response.status_code == 200 else None

    def _esp_unsubscribe(self, lane: Lane, seq: int, token: str) -> bool:
        # a person unsubscribes through mail they get: an opted-out member gets none, and a
        # second unsubscribe is no new evidence at the ESP (nor in the true history)
        if self._esp_status(lane, token) not in ("subscribed", "pending"):
            return False
        member = self._patch(lane, token, {"status": "unsubscribed"})
        if member is None:
            return False
        lane.reference.record(seq, datetime.fromisoformat(member["last_changed"]), token, "optout", "esp:unsubscribe")
        return True

    def _esp_hard_bounce(self, lane: Lane, seq: int, token: str) -> bool:
        if self._esp_status(lane, token) not in ("subscribed", "pending"):
            return False  # only mail that is sent bounces: a DOI mail or a campaign
        member = self._patch(lane, token, {"status": "cleaned"})
        if member is None:
            return False
        lane.reference.record(seq, datetime.fromisoformat(member["last_changed"]), token, "optout", "esp:hard_bounce")
        return True

    def _esp_profile_edit(self, lane: Lane, seq: int, token: str, first_name: str) -> bool:
        if self._patch(lane, token, {"merge_fields": {"FNAME": first_name}}) is None:
            return False
        lane.reference.touch(seq, token, "esp:profile_edit")
        return True

    def _esp_address_change(self, lane: Lane, seq: int, token: str, new_token: str) -> bool:
        if self._esp_status(lane, token) in (None, "archived"):
            return False
        if self._patch(lane, token, {"email_address": lane.address(new_token)}) is None:
            return False
        lane.reference.carry(seq, utc_now(), token, new_token, "esp:address_change")
        return True

    def _esp_archive(self, lane: Lane, seq: int, token: str) -> bool:
        if self.api.delete(self._member_path(lane, token)).status_code != 204:
            return False
        lane.reference.touch(seq, token, "esp:archive", status_change=True)
        return True

    def _esp_refuse_address(self, lane: Lane, seq: int, token: str) -> bool:
        lane.poison.add(lane.address(token))
        lane.ever_poisoned.add(token)
        lane.reference.touch(seq, token, "esp:refuses_address")
        return True

    # mailbridge, per seed ---------------------------------------------------------

    def _decide(self, lane: Lane, seq: int, token: str, action: str) -> bool:
        try:
            record_decision(self.warehouse, lane.address(token), lane.link_id, action, "simulation")
        except (DecisionError, duckdb.Error):
            return False
        if action == "unsubscribe":
            lane.reference.decided_unsubscribe(seq, utc_now(), token)
        else:
            lane.reference.decided(seq, token, action)
        return True

    # -- mailbridge, shared steps -----------------------------------------------------

    def set_faults(self, burst: str | None) -> None:
        """The emulator's fault injection, through its admin endpoint: a burst and the lanes' poison."""
        settings: dict[str, Any] = {"poison_addresses": sorted(a for lane in self.lanes for a in lane.poison)}
        if burst == "esp_down_writes":
            settings.update(rate_5xx=1.0)
        elif burst == "rate_limited_writes":
            settings.update(rate_429_retry_after=1.0, retry_after_seconds=0.01)
        elif burst == "truncated_writes":
            settings.update(rate_truncated=1.0)
        elif burst == "esp_down_member_reads":
            settings.update(rate_5xx=1.0, path_contains="/members")
        self.admin.put("_sandbox/faults", json=settings).raise_for_status()

    def sync(self, *, full: bool, run_id: str | None = None) -> str:
        """Extract everything and rebuild the models (what `mailbridge sync` runs), into the
        warehouse MAILBRIDGE_WAREHOUSE names, with its dbt target beside it."""
        from pipelines.runner import run_extractions

        run_id = run_id or self.run_id("full" if full else "incremental")
        try:
            run_extractions(self.config, full_refresh=full, run_id=run_id)
        except Exception as error:  # a sync that breaks off is an outcome, not a crash of the simulation
            raise SyncFailed(f"extraction failed: {type(error).__name__}: {str(error)[:300]}") from error
        built = dbt_build(self.warehouse, self.warehouse.parent / "dbt_target", run_id, full_refresh=full)
        if built.returncode != 0:
            tail = "\n".join((built.stdout + built.stderr).strip().splitlines()[-15:])
            raise SyncFailed(f"dbt build failed:\n{tail}")
        return run_id

    def sync_beside_a_full_one(self) -> list[Difference]:
        """An incremental sync, and a full sync of the same moment into a copy of the warehouse
        and dlt state as they were before it: where the two marts differ (`sandbox.compare`)."""
        beside = self.folder / "full_beside"
        shutil.rmtree(beside, ignore_errors=True)
        beside.mkdir()
        shutil.copy2(self.warehouse, beside / "warehouse.duckdb")
        shutil.copytree(self.warehouse.parent / "dlt", beside / "dlt")
        run_id = self.sync(full=False)
        own = os.environ[WAREHOUSE_ENV]
        os.environ[WAREHOUSE_ENV] = str(beside / "warehouse.duckdb")
        try:
            self.sync(full=True, run_id=run_id)
        finally:
            os.environ[WAREHOUSE_ENV] = own
        return mart_differences(self.warehouse, beside / "warehouse.duckdb")

    def push(self, *, kill: str | None = None, write_back: bool = True) -> tuple[str, Any]:
        """`mailbridge push` through its function, with short retries (and a simulated kill)."""
        from pipelines.pushback import push

        run_id = self.run_id("push-killed" if kill else "push")
        config = self.config
        killer = Killer(kill) if kill else None
        if killer is not None:
            # the process dies during the ESP writes: the CRM writes after them never happen
            config = config.model_copy(update={"crm": config.crm.model_copy(update={"write_back": False})})
        report = push(config, run_id=run_id, writer_factory=fast_writer_factory(killer))
        if killer is not None:
            # what a killed process leaves: attempts without an answer stay planned
            with duckdb.connect(str(self.warehouse)) as db:
                db.execute(
                    "update ops.pushback_outbox set status = 'planned', error_code = null, error_message = null "
                    "where run_id = ? and error_code = 'no_answer'",
                    [run_id],
                )
        return run_id, report

    def verify(self) -> int:
        """After the verifying sync: what the push sent is confirmed or sent again."""
        from pipelines.pushback import confirm_previous_attempts

        with duckdb.connect(str(self.warehouse)) as db:
            return confirm_previous_attempts(db)

    def outbox(self, run_id: str | None = None) -> list[dict[str, Any]]:
        query = (
            "select attempt_id, action_id, run_id, target, list_link_id, email_key, action, status, error_code "
            "from ops.pushback_outbox"
        )
        with duckdb.connect(str(self.warehouse), read_only=True) as db:
            cursor = db.execute(query + (" where run_id = ?" if run_id else ""), [run_id] if run_id else [])
            columns = [c[0] for c in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def esp_write_requests(self) -> list[Any]:
        return [e for e in self.emulator.log.snapshot() if e.method in ESP_WRITE_METHODS and e.account == ACCOUNT]
