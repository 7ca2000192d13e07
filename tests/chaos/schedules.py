"""Seeded fault and kill schedules: extractions and pushes under emulator faults, syncs and pushes
killed with SIGKILL, and a secrets canary; each ends with the invariants checked and counted.

`python -m tests.chaos --schedules N [--seed S] [--kills K]` runs N fault schedules (seeds S,
S+1, ...) and K kill schedules (seeds S, S+1, ...: an even seed kills a sync, an odd one a push),
then the canary, and prints the figures. A break names its seed and the command that replays it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

# the fixed pool of worlds a fault schedule draws from; each is built (and its fault-free
# reference computed) once per process
WORLD_SEEDS = (101, 202)
WORLD_CONTACTS = 80
ACCOUNT = "brand_main"
KEY_ENV = "MAILBRIDGE_MAILCHIMP_MAIN_KEY"
SHOP_KEY_ENV = "MAILBRIDGE_MAILCHIMP_SHOP_KEY"

# client settings that let a schedule meet many faults quickly
EXTRACTION = {
    "page_size": 20,
    "max_retries": 12,
    "backoff_seconds": 0.01,
    "max_retry_after_seconds": 0.05,
    "timeout_seconds": 2.0,
}
HANG_SECONDS = 0.2
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
READ_FAULTS = ("429", "429_retry_after", "5xx", "reset", "timeout", "truncated", "malformed")
WRITE_FAULTS = (*READ_FAULTS, "applied_timeout")
# the raw tables a Mailchimp extraction fills, and the key that makes a row one row
RAW_KEYS = {
    "lists": ("esp_account", "id"),
    "members": ("esp_account", "list_id", "id"),
    "member_addresses": ("esp_account", "list_id", "contact_id", "id"),
    "campaigns": ("esp_account", "id"),
    "reports": ("esp_account", "campaign_id"),
    "email_activity": ("esp_account", "campaign_id", "email_id", "action", "timestamp", "url"),
    "sent_to": ("esp_account", "campaign_id", "email_id"),
    "unsubscribes": ("esp_account", "campaign_id", "email_id"),
    "abuse_reports": ("esp_account", "campaign_id", "email_id"),
}
# a slot in a run of these statuses means that nothing waits and nothing holds
UNFINISHED_RUN_STATUSES = ("STARTED", "STARTING", "QUEUED", "NOT_STARTED", "CANCELING")
CANARY_KEY = "c4nary0key0f1e2d3c4b5a69788796a5b-us1"
WRONG_CANARY_KEY = "c4nary0wrong0e1d2c3b4a5968778695a4-us1"
CANARY_PASSWORD = "c4naryPw-7d1e9b3f"


@dataclasses.dataclass
class Outcome:
    """What one schedule found."""

    kind: str  # fault, sync_kill, push_kill, canary
    seed: int
    breaks: list[str] = dataclasses.field(default_factory=list)
    rows_lost: int = 0
    duplicate_rows: int = 0
    faults: Counter[str] = dataclasses.field(default_factory=Counter)
    kills: int = 0
    canary_hits: int = 0
    seconds: float = 0.0
    note: str = ""

    def check(self, holds: bool, message: str) -> None:
        if not holds:
            self.breaks.append(message)


# -- worlds -------------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    """A generated world, its CRM and a warehouse with the queue built fault-free (the template
    every push starts from), and what fault-free runs gave: the raw rows and the pushes' effect."""

    seed: int
    scenario: Any
    folder: Path
    raw: dict[str, Counter[tuple[Any, ...]]]
    members: dict[tuple[str, str], tuple[str, str]]  # (list, id) -> (email, status) as extracted
    pushed_statuses: dict[tuple[str, str], str]  # (list, id) -> status at the ESP after a clean push
    pushed_outcomes: dict[str, str]  # action id -> outcome of the clean push
    ever_unsubscribed: set[tuple[str, str]]  # opted out before or by the clean push


_WORLDS: dict[int, World] = {}


def world(seed: int, root: Path) -> World:
    if seed not in _WORLDS:
        _WORLDS[seed] = _build_world(seed, root / f"world-{seed}")
    return _WORLDS[seed]


@contextlib.contextmanager
def emulator_for(scenario: Any, faults: Any = None) -> Iterator[Any]:
    """A fresh Mailchimp emulator of the scenario in this process, on a free port."""
    from sandbox.mailchimp.app import MailchimpEmulator
    from sandbox.server import BackgroundServer

    emulator = MailchimpEmulator.from_scenario(scenario, faults)
    server = BackgroundServer(emulator.app).start()
    emulator.base_url = f"{server.url}/3.0"
    try:
        yield emulator
    finally:
        server.stop()


def project_config(folder: Path, base_url: str, crm_url: str | None = None, **overrides: Any) -> Any:
    """A one-account project in `folder` (CRM and warehouse beside its mailbridge.yaml)."""
    from mailbridge.config import load_config
    from tests.conftest import write_project_config

    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "policy": {"transmit_new_members": True},
        "extraction": EXTRACTION,
        "gating": {"push_max_age_minutes": 100_000},
        **overrides,
    }
    path = write_project_config(
        folder,
        base_url=base_url,
        crm_url=crm_url or f"sqlite:///{folder / 'crm.sqlite'}",
        accounts=[ACCOUNT],
        overrides=settings,
    )
    return load_config(path)


def _build_world(seed: int, folder: Path) -> World:
    from assets.resources import run_dbt_build
    from pipelines.runner import run_extractions
    from sandbox.crm_db import write_crm
    from sandbox.generator import generate_scenario

    scenario = generate_scenario(contacts=WORLD_CONTACTS, seed=seed)
    template = folder / "template"
    with emulator_for(scenario) as emulator:
        config = project_config(template, emulator.base_url)
        write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
        run_extractions(config, full_refresh=True, run_id="reference")
        built = run_dbt_build(config.warehouse_path(), folder / "target", "reference", unit_tests=False)
        if built.returncode != 0:
            raise RuntimeError(f"dbt build of world {seed} failed:\n{built.stdout[-3000:]}")
        before = _esp_statuses(emulator)
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        raw = _raw_rows(db)
        members = _raw_members(db)
    # a clean push from a copy of the template: what every faulty push must come to
    clean = folder / "clean_push"
    with emulator_for(scenario) as emulator:
        config = _copy_template(template, clean, emulator.base_url)
        _push(config, "clean")
        pushed_statuses = _esp_statuses(emulator)
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        pushed_outcomes = _outcomes(db)
    unsubscribed = {key for states in (before, pushed_statuses) for key, s in states.items() if s == "unsubscribed"}
    return World(seed, scenario, folder, raw, members, pushed_statuses, pushed_outcomes, unsubscribed)


def _copy_template(template: Path, folder: Path, base_url: str) -> Any:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name in ("crm.sqlite", "warehouse.duckdb"):
        shutil.copy2(template / name, folder / name)
    return project_config(folder, base_url)


def _push(config: Any, run_id: str, factory: Callable[..., Any] | None = None) -> Any:
    from pipelines.pushback import PushAccountFailed, push

    try:
        return push(config, run_id=run_id, writer_factory=factory)
    except PushAccountFailed as failed:
        return failed.report


def _fast_writer(account: Any, **options: Any) -> Any:
    from pipelines.http import RetryPolicy
    from pipelines.mailchimp.writer import MailchimpWriter

    retry = RetryPolicy(max_retries=12, backoff_seconds=0.01, max_backoff_seconds=0.1, max_retry_after_seconds=0.05)
    return MailchimpWriter(account, retry=retry, **options)


def _esp_statuses(emulator: Any) -> dict[tuple[str, str], str]:
    account = emulator.state.account_named(ACCOUNT)
    return {
        (list_id, member_id): member.status
        for list_id, mailchimp_list in account.lists.items()
        for member_id, member in mailchimp_list.members.items()
    }


def _raw_rows(db: duckdb.DuckDBPyConnection) -> dict[str, Counter[tuple[Any, ...]]]:
    """Per raw table, how often each key occurs."""
    found = {}
    for table, key in RAW_KEYS.items():
        rows = db.execute(f"select {', '.join(key)} from raw_mailchimp.{table}").fetchall()
        found[table] = Counter(tuple(str(value) for value in row) for row in rows)
    return found


def _raw_members(db: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[str, str]]:
    rows = db.execute("select list_id, id, email_address, status from raw_mailchimp.members").fetchall()
    return {(list_id, member_id): (email, status) for list_id, member_id, email, status in rows}


def _outcomes(db: duckdb.DuckDBPyConnection, runs: tuple[str, ...] | None = None) -> dict[str, str]:
    """Per action, the best outcome its attempts came to (sent before rejected before failed)."""
    rank = (
        "case status when 'confirmed' then 0 when 'sent' then 1 when 'rejected' then 2 when 'stale' then 3 else 4 end"
    )
    where = f"where run_id in ({', '.join('?' for _ in runs)})" if runs else ""
    rows = db.execute(
        f"select action_id, arg_min(status, {rank}) from ops.pushback_outbox {where} group by action_id",
        list(runs or ()),
    ).fetchall()
    return dict(rows)


# -- fault schedules ----------------------------------------------------------------------


def fault_mix(rng: random.Random, kinds: tuple[str, ...], scale: float) -> dict[str, float]:
    """Rates for some of `kinds` (each one on with even odds, at least one on), plus slowness."""
    chosen = [kind for kind in kinds if rng.random() < 0.5] or [rng.choice(kinds)]
    drawn = {kind: rng.uniform(0.02, scale) for kind in chosen}
    # at most `scale` of all requests fail, so that retries get through in a handful of tries
    shrink = min(1.0, scale / sum(drawn.values()))
    rates = {f"rate_{kind}": round(rate * shrink, 3) for kind, rate in drawn.items()}
    if rng.random() < 0.5:
        rates["rate_slow"] = round(rng.uniform(0.02, 0.1), 3)
    return rates


def run_fault_schedule(seed: int, root: Path, verify: bool = False) -> Outcome:
    """One world, an extraction under faults and its recovery, a push under faults and its
    recovery (and, with `verify`, a verifying sync); the invariants checked after each."""
    from sandbox.faults import FaultSettings

    outcome = Outcome("fault", seed)
    started = time.monotonic()
    rng = random.Random(seed)
    chosen = world(rng.choice(WORLD_SEEDS), root)
    folder = root / f"schedule-{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    reads = fault_mix(rng, READ_FAULTS, 0.25)
    drift = {"method": "GET", "path_contains": "/members", "rate_offset_drift": round(rng.uniform(0.1, 0.4), 3)}
    read_faults = FaultSettings(
        seed=seed,
        hang_seconds=HANG_SECONDS,
        retry_after_seconds=0.02,
        slow_seconds=0.03,
        drift_members=rng.randint(1, 2),
        rules=[{**drift, **reads}] if rng.random() < 0.7 else [],
        **reads,
    )
    write_rates = fault_mix(rng, WRITE_FAULTS, 0.35)
    write_rates.setdefault("rate_applied_timeout", round(rng.uniform(0.05, 0.15), 3))
    write_faults = FaultSettings(
        seed=seed,
        hang_seconds=HANG_SECONDS,
        retry_after_seconds=0.02,
        slow_seconds=0.03,
        rules=[{"method": method, **write_rates} for method in WRITE_METHODS],
        method="NONE",  # reads during the push answer plainly: drift would change the world
    )
    outcome.note = f"world {chosen.seed}; reads {reads}; drift {read_faults.rules != []}; writes {write_rates}"
    try:
        _extract_under_faults(chosen, folder / "extract", read_faults, outcome)
        _push_under_faults(chosen, folder / "push", write_faults, outcome, verify)
    except Exception as error:  # an invariant cannot be checked: that is a break too
        outcome.breaks.append(f"{error.__class__.__name__}: {str(error)[:500]}")
    outcome.seconds = time.monotonic() - started
    if not outcome.breaks:
        shutil.rmtree(folder, ignore_errors=True)
    return outcome


def _first(items: set[Any]) -> Any:
    return min(items) if items else None


def _extract_under_faults(chosen: World, folder: Path, faults: Any, outcome: Outcome) -> None:
    from pipelines.runner import extraction_named, run_extraction
    from sandbox.faults import FaultSettings

    with emulator_for(chosen.scenario, faults) as emulator:
        config = project_config(folder, emulator.base_url)
        try:
            run_extraction(extraction_named(config, "mailchimp", full_refresh=True, run_id="faulty"))
        except Exception as error:  # a faulty run may fail; the recovery run must not
            outcome.note += f"; faulty extraction failed: {error.__class__.__name__}"
        outcome.faults.update(emulator.faults.as_json()["injected"])
        emulator.faults.configure(FaultSettings())
        run_extraction(extraction_named(config, "mailchimp", full_refresh=False, run_id="recovery"))
        account = emulator.state.account_named(ACCOUNT)
        now = _esp_statuses(emulator)
        forgotten = {(list_id, m) for list_id, item in account.lists.items() for m in item.forgotten}
        emails = {
            (list_id, member_id): member.email_address
            for list_id, item in account.lists.items()
            for member_id, member in item.members.items()
        }
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        raw = _raw_rows(db)
        members = _raw_members(db)
        unread = db.execute(
            "select count(*) from (select distinct on (list_id) completed from raw_mailchimp.list_extractions "
            "order by list_id, finished_at desc nulls last) where not completed"
        ).fetchone()[0]
        failed = db.execute(
            "select count(*) from (select distinct on (resource, campaign_id) completed "
            "from raw_mailchimp.resource_extractions order by resource, campaign_id, finished_at desc nulls last) "
            "where not completed"
        ).fetchone()[0]
    outcome.check(unread == 0, f"{unread} list(s) not read completely by the recovery extraction")
    outcome.check(failed == 0, f"{failed} resource(s) not read completely by the recovery extraction")
    drifted = {key for key, (email, _) in members.items() if email.startswith("drift.")} | forgotten
    drifted |= {key for key, email in emails.items() if email.startswith("drift.")}
    for table, rows in raw.items():
        repeated = sum(count - 1 for count in rows.values())
        outcome.duplicate_rows += repeated
        outcome.check(repeated == 0, f"raw_mailchimp.{table}: {repeated} duplicate row(s)")
        if table in ("members", "member_addresses", "lists"):
            continue  # compared member by member below; lists only by key
        lost = set(chosen.raw[table]) - set(rows)
        extra = set(rows) - set(chosen.raw[table])
        outcome.rows_lost += len(lost)
        outcome.check(
            not lost, f"raw_mailchimp.{table}: {len(lost)} row(s) of the reference missing, e.g. {_first(lost)}"
        )
        outcome.check(
            not extra, f"raw_mailchimp.{table}: {len(extra)} row(s) the reference lacks, e.g. {_first(extra)}"
        )
    outcome.check(set(raw["lists"]) == set(chosen.raw["lists"]), "raw_mailchimp.lists differs from the reference")
    # members drift did not touch: exactly the reference, statuses included
    expected = {key: value for key, value in chosen.members.items() if key not in drifted}
    got = {key: value for key, value in members.items() if key not in drifted}
    lost_members = set(expected) - set(got)
    outcome.rows_lost += len(lost_members)
    outcome.check(
        not lost_members, f"{len(lost_members)} member(s) of the reference missing, e.g. {_first(lost_members)}"
    )
    changed = sorted(key for key in set(expected) & set(got) if expected[key] != got[key])
    outcome.check(not changed, f"{len(changed)} member(s) differ from the reference, e.g. {changed[:1]}")
    extra_members = set(got) - set(expected)
    outcome.check(not extra_members, f"{len(extra_members)} member(s) the reference lacks")
    # members drift added are read too, with the status the ESP has now
    missing_now = [key for key in now if key in drifted and members.get(key, ("", ""))[1] != now[key]]
    outcome.rows_lost += len(missing_now)
    outcome.check(not missing_now, f"{len(missing_now)} member(s) signed up during the read are missing or stale")


def _push_under_faults(chosen: World, folder: Path, faults: Any, outcome: Outcome, verify: bool) -> None:
    from sandbox.faults import FaultSettings

    with emulator_for(chosen.scenario, faults) as emulator:
        config = _copy_template(chosen.folder / "template", folder, emulator.base_url)
        with contextlib.suppress(Exception):  # a push under faults may fail; its recovery must not
            _push(config, "faulty", _fast_writer)
        outcome.faults.update(emulator.faults.as_json()["injected"])
        emulator.faults.configure(FaultSettings())
        _push(config, "recovery")
        statuses = _esp_statuses(emulator)
        _check_pushed(chosen, config, statuses, outcome, ("faulty", "recovery"))
        if verify:
            _verifying_sync(config, outcome, ("faulty", "recovery"))
    outcome.check(_lock_is_free(config.warehouse_path()), "the warehouse lock is held after the runs")


def _check_pushed(
    chosen: World, config: Any, statuses: dict[tuple[str, str], str], outcome: Outcome, runs: tuple[str, ...]
) -> None:
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        outcomes = _outcomes(db, runs)
        planned = db.execute("select count(*) from ops.pushback_outbox where status = 'planned'").fetchone()[0]
        twice = db.execute(
            "select count(*) from (select action_id from ops.pushback_outbox where status in ('sent', 'confirmed') "
            "group by action_id having count(*) > 1)"
        ).fetchone()[0]
    outcome.check(planned == 0, f"{planned} outbox attempt(s) left planned after the recovery push")
    outcome.check(twice == 0, f"{twice} action(s) recorded as sent more than once")
    differing = sorted(a for a in chosen.pushed_outcomes if outcomes.get(a) != chosen.pushed_outcomes[a])
    outcome.check(
        not differing,
        f"{len(differing)} action(s) ended otherwise than in a clean push, e.g. {differing[:1]}: "
        + ", ".join(f"{outcomes.get(a)} instead of {chosen.pushed_outcomes[a]}" for a in differing[:1]),
    )
    resubscribed = sorted(k for k in chosen.ever_unsubscribed if statuses.get(k) in ("subscribed", "pending"))
    resubscribed = [k for k in resubscribed if chosen.pushed_statuses.get(k) != statuses.get(k)]
    outcome.check(
        not resubscribed, f"opt-out lost: {len(resubscribed)} member(s) subscribed again, e.g. {resubscribed[:1]}"
    )
    extra = set(statuses) - set(chosen.pushed_statuses)
    outcome.duplicate_rows += len(extra)
    outcome.check(not extra, f"{len(extra)} member(s) at the ESP that a clean push does not create")
    differ = sorted(k for k in chosen.pushed_statuses if statuses.get(k) != chosen.pushed_statuses[k])
    outcome.check(
        not differ,
        f"{len(differ)} member status(es) at the ESP differ from a clean push's, e.g. {differ[:1]}: "
        + ", ".join(f"{statuses.get(k)} instead of {chosen.pushed_statuses[k]}" for k in differ[:1]),
    )


def _verifying_sync(config: Any, outcome: Outcome, runs: tuple[str, ...]) -> None:
    """An incremental sync and a push after the pushes: every earlier attempt is settled."""
    from assets.resources import run_dbt_build
    from pipelines.runner import run_extractions

    run_extractions(config, full_refresh=False, run_id="verifying")
    built = run_dbt_build(config.warehouse_path(), config.base_dir / "target", "verifying", unit_tests=False)
    outcome.check(built.returncode == 0, f"dbt build of the verifying sync failed: {built.stdout[-500:]}")
    _push(config, "verifying")
    marks = ", ".join("?" for _ in runs)
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        stuck = db.execute(
            f"select status, count(*) from ops.pushback_outbox where run_id in ({marks}) "
            "and status in ('planned', 'sent') group by status",
            list(runs),
        ).fetchall()
    outcome.check(not stuck, f"after the verifying sync, attempts stuck: {dict(stuck)}")


def _lock_is_free(warehouse: Path) -> bool:
    from mailbridge.warehouse_lock import WarehouseBusy, hold_warehouse

    try:
        with hold_warehouse(warehouse, "chaos lock check", timeout=0):
            return True
    except WarehouseBusy:
        return False


# -- kill schedules -----------------------------------------------------------------------


def _mailbridge(
    folder: Path, env: dict[str, str], log: Path, *args: str, config: Path | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailbridge.cli", *args, "-c", str(config or folder / "mailbridge.yaml")],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return -999


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, of in parents.items() if of == parent]
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"


def _kill_project(seed: int, root: Path, emulator: Any, scenario: Any) -> tuple[Any, dict[str, str]]:
    from sandbox.crm_db import write_crm

    folder = root / f"kill-{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    project_config(folder, emulator.base_url)
    raw = yaml.safe_load((folder / "mailbridge.yaml").read_text("utf-8"))
    raw["esp_accounts"][0]["max_connections"] = 1  # batches one at a time: a push has a "between"
    (folder / "mailbridge.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
    from mailbridge.config import load_config

    config = load_config(folder / "mailbridge.yaml")
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    env = {KEY_ENV: scenario.account(ACCOUNT).api_key, "DAGSTER_HOME": str(folder / "dagster")}
    (folder / "dagster").mkdir()
    return config, env


def run_kill_schedule(seed: int, root: Path) -> Outcome:
    """SIGKILL of a real `mailbridge sync` (even seed) or `mailbridge push` (odd seed) at a
    seeded moment; then the runs after it must complete by themselves."""
    kind = "sync_kill" if seed % 2 == 0 else "push_kill"
    outcome = Outcome(kind, seed)
    started = time.monotonic()
    rng = random.Random(seed)
    world_seed = rng.choice(WORLD_SEEDS)
    from sandbox.generator import generate_scenario

    scenario = generate_scenario(contacts=WORLD_CONTACTS, seed=world_seed)
    try:
        with emulator_for(scenario) as emulator:
            config, env = _kill_project(seed, root, emulator, scenario)
            if kind == "sync_kill":
                _kill_a_sync(rng, config, env, outcome)
            else:
                _kill_a_push(rng, config, env, emulator, outcome)
            _after_kill(config, env, scenario, outcome, check_counts=kind == "sync_kill")
            if kind == "push_kill":
                # every action of the killed push applied once, as by a push never killed
                clean = world(world_seed, root).pushed_statuses
                now = _esp_statuses(emulator)
                differ = sorted(key for key in clean if now.get(key) != clean[key])
                outcome.check(
                    not differ,
                    f"{len(differ)} member status(es) differ from a clean push's, e.g. {differ[:1]}: "
                    + ", ".join(f"{now.get(key)} instead of {clean[key]}" for key in differ[:1]),
                )
    except Exception as error:
        outcome.breaks.append(f"{error.__class__.__name__}: {str(error)[:500]}")
    outcome.seconds = time.monotonic() - started
    if not outcome.breaks:
        shutil.rmtree(root / f"kill-{seed}", ignore_errors=True)
    return outcome


def _kill_after(process: subprocess.Popen[str], delay: float, outcome: Outcome) -> list[int]:
    """SIGKILL the process `delay` seconds from now (if it is still running); its descendants then."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    if process.poll() is not None:
        outcome.note += f"; it ended (code {process.returncode}) before the kill at {delay:.1f}s"
        return []
    family = _descendants(process.pid)
    phases = [
        Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60] for pid in family if _alive(pid)
    ]
    outcome.note += f"; killed at {delay:.1f}s" + (" with dbt running" if any("dbt" in p for p in phases) else "")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    outcome.kills += 1
    return family


def _kill_a_sync(rng: random.Random, config: Any, env: dict[str, str], outcome: Outcome) -> None:
    folder = config.base_dir
    # a full sync of these worlds takes 15-60 s here: extraction, normalize and load first, dbt
    # last. One that ends before its kill is followed by another, killed within the time the
    # finished one took, so that a schedule always kills (at most three tries)
    delay = rng.uniform(1.0, 40.0)
    family: list[int] = []
    for _ in range(3):
        started = time.monotonic()
        process = _mailbridge(folder, env, folder / "killed.log", "sync", "--full")
        kills = outcome.kills
        family = _kill_after(process, delay, outcome)
        if outcome.kills > kills:
            break
        delay = rng.uniform(1.0, max(1.5, (time.monotonic() - started) * 0.9))
    time.sleep(2.0)  # children that die with their parent have had the time to
    survivors = [pid for pid in family if _alive(pid)]
    outcome.check(not survivors, f"{len(survivors)} child process(es) outlived the killed sync")
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _kill_a_push(rng: random.Random, config: Any, env: dict[str, str], emulator: Any, outcome: Outcome) -> None:
    from sandbox.faults import FaultSettings

    folder = config.base_dir
    first = _mailbridge(folder, env, folder / "first.log", "sync", "--full")
    outcome.check(_finish(first, 900) == 0, "the sync before the push failed: " + _tail(folder / "first.log"))
    # every write takes a while; the push is killed after the first answer, at a seeded moment
    emulator.faults.configure(FaultSettings(rate_slow=1.0, slow_seconds=0.6, method="POST"))
    emulator.log.clear()
    process = _mailbridge(folder, env, folder / "killed.log", "push")
    deadline = time.monotonic() + 300
    while not [e for e in emulator.log.snapshot() if e.method == "POST"]:
        if process.poll() is not None or time.monotonic() > deadline:
            outcome.note += "; the push ended before its first batch"
            break
        time.sleep(0.02)
    _kill_after(process, rng.uniform(0.0, 1.5), outcome)
    emulator.faults.configure(FaultSettings())


def _after_kill(config: Any, env: dict[str, str], scenario: Any, outcome: Outcome, check_counts: bool) -> None:
    """The recovery sync, a push and a verifying sync and push: each completes, the marts equal a
    fault-free run's (after a killed sync), no lock or Dagster run is left, no attempt stays
    planned or sent."""
    from tests.e2e.test_sync_cli import mart_counts

    folder = config.base_dir
    expected = {link.id: scenario.expected.get(link.id, {}) for link in config.list_links}
    # the recovery sync; then a push and a verifying sync (`sync --push`), and the push after it
    # confirms what the verifying sync saw done
    for name, args in (("recovery", ("sync",)), ("push", ("sync", "--push"))):
        code = _finish(_mailbridge(folder, env, folder / f"{name}.log", *args), 900)
        outcome.check(
            code == 0, f"`mailbridge {' '.join(args)}` ({name}) exited {code}: " + _tail(folder / f"{name}.log")
        )
        if name == "recovery" and check_counts:
            counts = mart_counts(config.warehouse_path())
            outcome.check(counts == expected, f"reconciliation after recovery {counts} != {expected}")
    os.environ[KEY_ENV] = env[KEY_ENV]
    _push(config, "confirming")
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        stuck = db.execute(
            "select status, count(*) from ops.pushback_outbox where status in ('planned', 'sent') "
            "and run_id <> 'confirming' group by status"
        ).fetchall()
    outcome.check(not stuck, f"attempts stuck after the recovery push and a verifying sync: {dict(stuck)}")
    outcome.check(_lock_is_free(config.warehouse_path()), "the warehouse lock is held after the recovery")
    from dagster import DagsterInstance

    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        unfinished = [run.run_id for run in instance.get_runs() if run.status.value in UNFINISHED_RUN_STATUSES]
        slots = instance.event_log_storage.get_concurrency_info("duckdb_warehouse").claimed_slots
    outcome.check(not unfinished, f"Dagster run(s) left unfinished: {unfinished}")
    outcome.check(not slots, f"warehouse concurrency slot(s) still claimed: {slots}")


def _tail(log: Path, chars: int = 800) -> str:
    try:
        return log.read_text("utf-8", "replace")[-chars:]
    except OSError:
        return "(no log)"


# -- secrets canary -----------------------------------------------------------------------


def run_secrets_canary(root: Path) -> Outcome:
    """Commands a user runs, with a canary API key and a canary CRM password (PostgreSQL CRM, URL
    in an environment variable): neither may show up in output, local state or the warehouse."""
    import sqlalchemy as sa

    from sandbox.crm_db import write_crm
    from sandbox.generator import generate_scenario
    from tests.conftest import POSTGRES_URL

    outcome = Outcome("canary", 0)
    started = time.monotonic()
    folder = root / "canary"
    if folder.exists():
        shutil.rmtree(folder)
    scenario = generate_scenario(contacts=WORLD_CONTACTS, seed=WORLD_SEEDS[0])
    scenario.accounts = [
        dataclasses.replace(account, api_key=CANARY_KEY) if account.name == ACCOUNT else account
        for account in scenario.accounts
    ]
    schema = f"mb_chaos_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"create schema {schema}"))
    url = sa.engine.make_url(POSTGRES_URL).set(password=CANARY_PASSWORD)
    crm_url = url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        with emulator_for(scenario) as emulator:
            config = project_config(folder, emulator.base_url)
            raw = yaml.safe_load((folder / "mailbridge.yaml").read_text("utf-8"))
            raw["crm"].pop("url")
            raw["crm"]["url_env"] = "MAILBRIDGE_CHAOS_CRM_URL"
            raw["warehouse"] = ".mailbridge/warehouse.duckdb"
            (folder / "mailbridge.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
            os.environ["MAILBRIDGE_CHAOS_CRM_URL"] = crm_url
            from mailbridge.config import load_config

            config = load_config(folder / "mailbridge.yaml")
            write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
            env = {
                KEY_ENV: CANARY_KEY,
                "MAILBRIDGE_CHAOS_CRM_URL": crm_url,
                "DAGSTER_HOME": str(folder / ".mailbridge" / "dagster"),
            }
            (folder / ".mailbridge" / "dagster").mkdir(parents=True, exist_ok=True)
            address = next(iter(emulator.state.account_named(ACCOUNT).lists["nl0001"].members.values())).email_address
            commands: list[tuple[tuple[str, ...], dict[str, str], bool]] = [
                (("sync", "--full"), env, True),
                (("status",), env, True),
                (("explain", address), env, True),
                (
                    ("decide", address, "--list", "newsletter_main", "--action", "unsubscribe", "--by", "chaos"),
                    env,
                    True,
                ),
                (("push",), env, True),
                (("export", "--out", str(folder / "changes.csv")), env, True),
                (("sync",), {**env, KEY_ENV: WRONG_CANARY_KEY}, False),
            ]
            for index, (args, command_env, succeeds) in enumerate(commands):
                log = folder / f"command-{index}.log"
                code = _finish(_mailbridge(folder, command_env, log, *args, config=folder / "mailbridge.yaml"), 900)
                outcome.check((code == 0) == succeeds, f"`mailbridge {' '.join(args)}` exited {code}: {_tail(log)}")
                outcome.canary_hits += _hits(log.read_bytes(), f"output of `mailbridge {args[0]}`", outcome)
            for path in sorted((folder / ".mailbridge").rglob("*")):
                if path.is_file() and not path.name.endswith(".duckdb"):
                    outcome.canary_hits += _hits(path.read_bytes(), str(path.relative_to(folder)), outcome)
            outcome.canary_hits += _warehouse_hits(config.warehouse_path(), outcome)
    except Exception as error:
        outcome.breaks.append(f"{error.__class__.__name__}: {str(error)[:500]}")
    finally:
        os.environ.pop("MAILBRIDGE_CHAOS_CRM_URL", None)
        with admin.connect() as connection:
            connection.execute(sa.text(f"drop schema {schema} cascade"))
        admin.dispose()
    outcome.seconds = time.monotonic() - started
    if not outcome.breaks:
        shutil.rmtree(folder, ignore_errors=True)
    return outcome


CANARIES = (CANARY_KEY, WRONG_CANARY_KEY, CANARY_PASSWORD)


def _hits(data: bytes, where: str, outcome: Outcome) -> int:
    text = data.decode("utf-8", "replace")
    found = sum(canary in text or canary.split("-")[0] in text for canary in CANARIES)
    outcome.check(found == 0, f"a secret shows in {where}")
    return found


def _warehouse_hits(warehouse: Path, outcome: Outcome) -> int:
    from tests.e2e.test_sync_cli import text_columns_containing

    found = 0
    for canary in CANARIES:
        for column, count in text_columns_containing(warehouse, canary.split("-")[0]).items():
            found += count
            outcome.check(False, f"a secret shows in the warehouse column {column}")
    return found


# -- the run ------------------------------------------------------------------------------


def prepare_environment(environ: Any) -> None:
    """What every schedule runs with: quiet dlt, no telemetry, the sandbox key of the account,
    no warehouse but each project's own."""
    environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    environ[KEY_ENV] = "sandbox0brandmain00000000000000-us1"
    environ.pop("MAILBRIDGE_WAREHOUSE", None)


def run_schedules(
    schedules: int,
    seed: int = 0,
    kills: int | None = None,
    canary: bool = True,
    corpus: bool = True,
    verify_every: int = 50,
    workdir: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the schedules and return the figures (also printed through `echo`)."""
    kills = max(1, schedules // 50) if kills is None else kills
    root = workdir or Path(tempfile.mkdtemp(prefix="mailbridge-chaos-"))
    prepare_environment(os.environ)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for index in range(schedules):
        outcome = run_fault_schedule(seed + index, root, verify=index % verify_every == 0)
        outcomes.append(outcome)
        _report(outcome, echo)
    fault_seconds = time.monotonic() - started
    for index in range(kills):
        outcome = run_kill_schedule(seed + index, root)
        outcomes.append(outcome)
        _report(outcome, echo)
    if canary:
        outcome = run_secrets_canary(root)
        outcomes.append(outcome)
        _report(outcome, echo)
    breaks = [(o.kind, o.seed, message) for o in outcomes for message in o.breaks]
    injected: Counter[str] = Counter()
    for o in outcomes:
        injected.update(o.faults)
    figures: dict[str, Any] = {
        "schedules_run": len(outcomes),
        "fault_schedules": schedules,
        "seconds_per_fault_schedule": round(fault_seconds / schedules, 2) if schedules else None,
        "faults_injected": dict(sorted(injected.items())),
        "kills": sum(o.kills for o in outcomes),
        "kill_schedules": kills,
        "invariant_breaks": len(breaks),
        "rows_lost": sum(o.rows_lost for o in outcomes),
        "duplicate_rows": sum(o.duplicate_rows for o in outcomes),
        "canary_hits": sum(o.canary_hits for o in outcomes),
        "breaks": [f"{kind} schedule seed {s}: {message}" for kind, s, message in breaks],
    }
    if corpus:
        from tests.chaos.corpus import corpus_figures

        bad = corpus_figures()
        figures["bad_inputs_tried"] = bad["inputs_tried"]
        figures["bad_inputs_wrongly_accepted"] = bad["wrongly_accepted"]
    figures["seconds"] = round(time.monotonic() - started, 1)
    echo("")
    for key, value in figures.items():
        if key != "breaks":
            echo(f"{key}: {json.dumps(value)}")
    for kind, s, message in breaks:
        replay = f"--schedules 1 --kills 0 --seed {s}" if kind == "fault" else f"--schedules 0 --kills 1 --seed {s}"
        echo(f"BREAK {kind} seed {s} (replay: python -m tests.chaos {replay} --no-canary): {message}")
    if not workdir:
        shutil.rmtree(root, ignore_errors=True)
    return figures


def _report(outcome: Outcome, echo: Callable[[str], None]) -> None:
    verdict = "ok" if not outcome.breaks else f"{len(outcome.breaks)} BREAK(S)"
    echo(f"{outcome.kind} seed {outcome.seed}: {verdict} in {outcome.seconds:.1f}s ({outcome.note.lstrip('; ')})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=100, help="fault schedules to run (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first schedule (default 0)")
    parser.add_argument("--kills", type=int, default=None, help="kill schedules (default: 1 in 50, at least 1)")
    parser.add_argument("--no-canary", action="store_true", help="skip the secrets canary")
    parser.add_argument("--no-corpus", action="store_true", help="skip the bad-input corpus")
    parser.add_argument("--keep", type=Path, default=None, help="keep the schedules' folders here")
    args = parser.parse_args(argv)
    if args.schedules < 0 or (args.kills is not None and args.kills < 0):
        parser.error("--schedules and --kills must not be negative")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    figures = run_schedules(
        args.schedules,
        seed=args.seed,
        kills=args.kills,
        canary=not args.no_canary,
        corpus=not args.no_corpus,
        workdir=args.keep,
    )
    failed = figures["invariant_breaks"] or figures["rows_lost"] or figures["duplicate_rows"]
    failed = failed or figures["canary_hits"] or figures.get("bad_inputs_wrongly_accepted", 0)
    return 1 if failed else 0
