"""The `mailbridge` command: demo, sync, sandbox, status, ui, generate and load-crm."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailbridge.child import guarded
from mailbridge.config import CONFIG_ENV, WAREHOUSE_ENV, ConfigError, MailbridgeConfig, load_config
from mailbridge.stopping import Stopped, cleanup_on_force, raise_if_received, received, stop_on_signals
from mailbridge.urls import masked_url
from mailbridge.warehouse_lock import (
    WarehouseBusy,
    WarehouseInUse,
    WriteHold,
    hold_warehouse,
    read_warehouse,
    snapshot_path,
)

app = typer.Typer(
    help="mailbridge keeps a CRM and its email service providers in step, into a DuckDB warehouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# bound to the real streams now: runs redirect sys.stdout, where dbt's log lines go
console = Console(file=sys.stdout)
err = Console(file=sys.stderr)

RESULT_ORDER = (
    "in_sync",
    "new_in_list",
    "new_contact",
    "not_in_esp",
    "conflict",
    "esp_newer",
    "email_changed",
    "blocked",
    "invalid_email",
    "aborted",
)
DEFAULT_SANDBOX_PORT = 8421

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Project config file (default: $MAILBRIDGE_CONFIG or ./mailbridge.yaml)."),
]
WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait while another command writes the warehouse (default: warehouse_wait_seconds, 1800).",
    ),
]
# the warehouse stayed busy: try again later (sysexits EX_TEMPFAIL)
EXIT_BUSY = 75


class MailbridgeExit(Exception):
    """A failure already explained to the user."""


def _printable(value: object) -> str:
    """Text from outside (config keys, paths, messages, URLs) for a Rich print: credentials masked,
    brackets shown as written instead of read as markup."""
    return escape(masked_url(str(value)))


def _config_failure(error: ConfigError) -> typer.Exit:
    err.print(f"[red]Configuration error:[/red] {_printable(error)}")
    return typer.Exit(2)


def _check_environment(config: MailbridgeConfig) -> None:
    """Every variable a sync reads is set, checked before anything is extracted."""
    try:
        config.check_environment()
    except ConfigError as error:
        raise _config_failure(error) from None


def _crm_url(config: MailbridgeConfig) -> str:
    try:
        return config.crm.connection_url(config.base_dir)
    except ConfigError as error:
        raise _config_failure(error) from None


def _notice(message: str) -> None:
    err.print(message, style="yellow", markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _unattended() -> Iterator[None]:
    """A command's frame: SIGTERM and SIGINT stop it (exit 143, 130), whatever it is doing; a
    warehouse that stays busy ends it with exit 75 (try again later)."""
    try:
        with stop_on_signals():
            yield
    except (Stopped, KeyboardInterrupt) as interrupted:
        # dlt turns the signal into its own KeyboardInterrupt
        stopped = interrupted if isinstance(interrupted, Stopped) else Stopped(received() or signal.SIGINT)
        err.print(
            f"[red]Stopped by {stopped.signal_name}[/red]: it left nothing that blocks the next run.", soft_wrap=True
        )
        raise typer.Exit(stopped.exit_code) from None
    except WarehouseBusy as busy:
        err.print(f"[red]The warehouse is busy:[/red] {escape(str(busy))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BUSY) from None
    except WarehouseInUse as error:
        err.print(f"[red]{escape(str(error))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


P = ParamSpec("P")
R = TypeVar("R")


def _stoppable(command: Callable[P, R]) -> Callable[P, R]:
    """The command runs in `_unattended`."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with _unattended():
            return command(*args, **kwargs)

    return run


@contextmanager
def _writing(
    config: MailbridgeConfig, command: str, wait: float | None, run_id: str | None = None
) -> Iterator[WriteHold]:
    """Hold the warehouse for writing, saying on stderr whom it waits for, and for how long."""
    timeout = config.warehouse_wait_seconds if wait is None else wait
    with hold_warehouse(config.warehouse_path(), command, timeout=timeout, run_id=run_id, notify=_notice) as hold:
        yield hold


@contextmanager
def _reading(config: MailbridgeConfig) -> Iterator[Path]:
    """The file to read the warehouse from: itself, or while a command writes it, its snapshot."""
    with read_warehouse(config.warehouse_path(), timeout=config.warehouse_wait_seconds, notify=_notice) as path:
        yield path


@contextmanager
def _reading_synced(config: MailbridgeConfig) -> Iterator[Path]:
    """`_reading`, for a command that needs a synced warehouse: without one it says what to run."""
    warehouse = config.warehouse_path()
    if not warehouse.exists():
        err.print(f"[red]no warehouse at {_printable(warehouse)}: run `mailbridge sync --full` first[/red]")
        raise typer.Exit(1)
    with _reading(config) as readable:
        yield readable


def _load(config_file: Path | None) -> MailbridgeConfig:
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file.resolve())
    try:
        config = load_config(config_file)
    except ConfigError as error:
        raise _config_failure(error) from None
    os.environ[CONFIG_ENV] = str(config.source_file)
    os.environ[WAREHOUSE_ENV] = str(config.warehouse_path())
    _quiet_libraries()
    return config


def _quiet_libraries() -> None:
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def dagster_home(config: MailbridgeConfig) -> Path:
    """Dagster's instance (run history, schedules) beside the warehouse: what `mailbridge ui` shows."""
    home = Path(os.environ.get("DAGSTER_HOME") or config.warehouse_path().parent / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(
            "# written by mailbridge: DuckDB takes one writer, so warehouse steps run one at a time\n"
            "concurrency:\n  pools:\n    default_limit: 1\n"
            "telemetry:\n  enabled: false\n",
            "utf-8",
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_sync_job(
    config: MailbridgeConfig,
    *,
    full_refresh: bool,
    push: bool = False,
    dry_run: bool = False,
    wait: float | None = None,
) -> str:
    """Run a sync job through Dagster, recorded in the instance's history: full or incremental,
    or sync_and_push (incremental sync → reconcile → push → incremental sync to verify).
    It holds the warehouse for the whole run, waiting at most `wait` seconds for it."""
    dagster_home(config)
    job_name = "sync_and_push" if push else "full_sync" if full_refresh else "incremental_sync"
    run_id = str(uuid.uuid4())
    with _writing(config, f"mailbridge sync ({job_name})", wait, run_id=run_id) as hold:
        return _run_sync_job_holding(config, job_name, run_id, hold, full_refresh=full_refresh, dry_run=dry_run)


def _run_sync_job_holding(
    config: MailbridgeConfig, job_name: str, run_id: str, hold: WriteHold, *, full_refresh: bool, dry_run: bool
) -> str:
    from dagster import DagsterInstance, DagsterRunStatus

    from assets.definitions import defs
    from assets.ingest import SyncConfig
    from assets.jobs import sync_run_config
    from assets.pushback import PushConfig
    from assets.runs import process_tags, release_abandoned_runs, stop_run

    push_config = PushConfig(dry_run=dry_run) if job_name == "sync_and_push" else None
    push = push_config is not None
    job = defs.resolve_job_def(job_name)
    instance = DagsterInstance.get()
    # a run killed before this one left its run STARTED and its warehouse slot taken
    for line in release_abandoned_runs(instance, own_run_id=run_id, previous=hold.previous):
        _notice(line)
    log_dir = config.warehouse_path().parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{job_name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    started = time.monotonic()
    with (
        cleanup_on_force(lambda: stop_run(instance, run_id, "stopped by a signal before it finished")),
        console.status(
            f"[bold]Running {job_name}[/bold] "
            + ("(extract → dbt build → push → extract → dbt build)…" if push else "(extract → dbt build)…")
        ),
        log_file.open("w", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            result = job.execute_in_process(
                instance=instance,
                run_config=sync_run_config(SyncConfig(full_refresh=full_refresh), log_level="INFO", push=push_config),
                raise_on_error=False,
                run_id=run_id,
                tags={"mailbridge/started_by": "cli", **process_tags()},
            )
        except BaseException:
            # a signal that got through (dlt raises its own KeyboardInterrupt): no run is left STARTED
            with contextlib.suppress(Exception):
                stop_run(instance, run_id, "stopped by a signal before it finished")
            raise
    elapsed = time.monotonic() - started
    run = instance.get_run_by_id(result.run_id)
    if run is not None and not run.is_finished:
        stop_run(instance, run_id, "the run ended without a final status")
    # Dagster took the signal and failed the run: stop here, not with a "failed" report
    raise_if_received()
    if not result.success or run is None or run.status != DagsterRunStatus.SUCCESS:
        err.print(f"[red]{job_name} failed[/red] (run {result.run_id}, {elapsed:.1f}s):")
        for message in _failure_messages(result):
            err.print(f"  {_printable(message)}")
        err.print(f"  the run's log: {_printable(log_file)} (and the run in `mailbridge ui`)")
        raise MailbridgeExit()
    console.print(f"[green]✓[/green] {job_name} finished in {elapsed:.1f}s (Dagster run {result.run_id})")
    return result.run_id


def _failure_messages(result: Any) -> list[str]:
    """The innermost cause of each failed step: the message a user can act on. A step that
    explains its own failure (a failed dbt build names its tests and their rows) is shown whole."""
    messages = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        explained = event.step_failure_data.user_failure_data
        if explained is not None and explained.description:
            first, *rest = explained.description.strip().splitlines()
            messages += [f"{event.step_key}: {first}", *(f"  {line}" for line in rest)]
            continue
        error = event.step_failure_data.error
        while error.cause is not None:
            error = error.cause
        text = error.message.strip().splitlines()
        messages.append(f"{event.step_key}: {text[-1] if text else error.cls_name}")
    return messages or ["the run failed; open `mailbridge ui` for the full log"]


def reconciliation_counts(config: MailbridgeConfig) -> dict[str, dict[str, int]]:
    import duckdb

    warehouse = config.warehouse_path()
    if not warehouse.exists():
        raise MailbridgeExit(f"no warehouse at {warehouse}: run `mailbridge sync --full` first")
    with _reading(config) as readable, duckdb.connect(str(readable), read_only=True) as connection:
        rows = connection.execute(
            "select list_link_id, result, count(*) from marts.fct_list_reconciliation group by all order by all"
        ).fetchall()
    counts: dict[str, dict[str, int]] = {link.id: {} for link in config.list_links}
    for link_id, result, count in rows:
        counts.setdefault(link_id, {})[result] = count
    return counts


def print_read_failures(config: MailbridgeConfig) -> int:
    """Warn of every ESP read the latest extraction could not complete; returns how many.
    The rest of the sync went on, and the next sync reads them again."""
    import duckdb

    try:
        with duckdb.connect(str(config.warehouse_path()), read_only=True) as connection:
            lists = connection.execute(
                "select esp_account, esp_list_id, coalesce(error_message, '') "
                "from intermediate.int_esp__list_extractions where not is_completed order by all"
            ).fetchall()
            reads = connection.execute(
                "select esp_account, resource, coalesce(campaign_id, ''), coalesce(error_message, '') "
                "from intermediate.int_esp__resource_extractions where not is_completed order by all"
            ).fetchall()
    except duckdb.CatalogException:  # a warehouse from before these models: nothing to tell
        return 0
    for account, list_id, error in lists:
        err.print(
            f"[yellow]warning:[/yellow] the members of {account} list {list_id} were not read completely: "
            f"the list is aborted (nothing is pushed for it) until a sync reads it. {error}"
        )
    for account, resource, campaign, error in reads:
        where = f" of campaign {campaign}" if campaign else ""
        err.print(
            f"[yellow]warning:[/yellow] {resource}{where} at {account} could not be read; "
            f"the next sync reads it again. {error}"
        )
    return len(lists) + len(reads)


def print_summary(counts: dict[str, dict[str, int]], expected: dict[str, dict[str, int]] | None = None) -> bool:
    """A table of results (rows) per list link (columns); with `expected`, mark every count that differs."""
    seen = {result for per_link in counts.values() for result in per_link}
    if expected:
        seen |= {result for per_link in expected.values() for result in per_link}
    results = [result for result in RESULT_ORDER if result in seen] + sorted(seen - set(RESULT_ORDER))
    table = Table(title="Reconciliation results per list link", header_style="bold")
    table.add_column("result")
    for link_id in counts:
        table.add_column(_printable(link_id), justify="right")
    matches = True
    for result in results:
        cells = []
        for link_id, per_link in counts.items():
            value = per_link.get(result, 0)
            want = (expected or {}).get(link_id, {}).get(result, 0)
            if expected is not None and value != want:
                matches = False
                cells.append(f"[red]{value:,} (expected {want:,})[/red]")
            else:
                cells.append(f"{value:,}")
        table.add_row(_printable(result), *cells)
    table.add_section()
    table.add_row("total", *(f"{sum(per_link.values()):,}" for per_link in counts.values()))
    console.print(table)
    return matches


@contextmanager
def sandbox_process(scenario_dir: Path, port: int, timeout: float = 600) -> Iterator[str]:
    """Start `mailbridge sandbox` as a child process and wait until it answers."""
    import socket

    url = f"http://127.0.0.1:{port}"
    with socket.socket() as probe:
        probe.settimeout(1.0)
        taken = probe.connect_ex(("127.0.0.1", port)) == 0
    if taken:
        raise MailbridgeExit(
            f"port {port} is already in use: stop what runs there, or change the port of the accounts' "
            "base_url in the config file (the sandbox takes it from there)"
        )
    # guarded: a killed demo must not leave the sandbox holding the port
    process = subprocess.Popen(
        guarded(
            [sys.executable, "-m", "mailbridge.cli", "sandbox", "--scenario", str(scenario_dir), "--port", str(port)]
        ),
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        with console.status(f"Starting the sandbox ESPs on port {port}…"):
            _wait_until_ready(process, url, deadline, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, deadline: float, timeout: float) -> None:
    import httpx

    while True:
        if process.poll() is not None:
            raise MailbridgeExit(f"the sandbox exited with code {process.returncode}")
        try:
            httpx.get(f"{url}/_sandbox/faults", timeout=1.0).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise MailbridgeExit(f"the sandbox did not answer on {url} within {timeout:.0f}s") from None
            time.sleep(0.2)


def _sandbox_port(config: MailbridgeConfig) -> int:
    for account in config.esp_accounts:
        if account.base_url:
            parsed = urlparse(account.base_url)
            if parsed.hostname in ("127.0.0.1", "localhost") and parsed.port:
                return parsed.port
    return DEFAULT_SANDBOX_PORT


@app.command()
@_stoppable
def demo(
    contacts: Annotated[int, typer.Option(help="CRM contacts in the generated demo world.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed of the generator.")] = 42,
    campaigns: Annotated[int, typer.Option(help="Sent campaigns per ESP list.")] = 2,
    push: Annotated[
        bool,
        typer.Option("--push", help="Then run sync_and_push: push the ready actions, sync again, show what changed."),
    ] = False,
    wait: WaitOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Generate the demo world, start the sandbox ESPs, run a full sync through Dagster, print the results."""
    from sandbox.crm_db import write_crm
    from sandbox.generator import generate_scenario
    from sandbox.scenario import load_scenario

    config = _load(config_file)
    demo_dir = config.warehouse_path().parent / "demo"
    # generated worlds are relative to today (DOI grace periods): one per day
    scenario_dir = demo_dir / f"scenario-{contacts}-{seed}-{campaigns}-{time.strftime('%Y%m%d', time.gmtime())}"
    started = time.monotonic()
    if not (scenario_dir / "scenario.yaml").exists():
        with console.status(f"Generating a demo world of {contacts:,} contacts…"):
            generate_scenario(
                contacts=contacts, seed=seed, campaigns=campaigns, doi_grace_days=config.policy.doi_grace_period_days
            ).save(scenario_dir)
    scenario = load_scenario(scenario_dir)
    console.print(f"[green]✓[/green] demo world: {_printable(scenario.description)} ({_printable(scenario_dir)})")

    url = _crm_url(config)
    with console.status("Writing the demo CRM…"):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        write_crm(scenario.tables, url, config.crm)
    console.print(f"[green]✓[/green] demo CRM written ({_printable(url)})")

    for account in scenario.accounts:
        try:
            os.environ[config.account(account.name).api_key_env] = account.api_key
        except KeyError:
            continue
    _check_environment(config)

    # a demo starts from an empty warehouse and fresh extraction state
    warehouse = config.warehouse_path()
    with _writing(config, "mailbridge demo (clearing the warehouse)", wait):
        for stale in (
            warehouse,
            warehouse.with_suffix(".duckdb.wal"),
            snapshot_path(warehouse),
            warehouse.parent / "dlt",
        ):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()

    port = _sandbox_port(config)
    try:
        with sandbox_process(scenario_dir, port) as url:
            console.print(f"[green]✓[/green] sandbox ESPs at {_printable(url)}")
            sync_started = time.monotonic()
            run_sync_job(config, full_refresh=True, wait=wait)
            sync_seconds = time.monotonic() - sync_started
            matches = print_summary(reconciliation_counts(config), scenario.expected)
            if matches:
                console.print("[green]✓[/green] every count equals what the generator expected")
            else:
                err.print("[red]✗ the reconciliation differs from what the generator expected[/red]")
            push_seconds = None
            if push and matches:
                push_started = time.monotonic()
                run_sync_job(config, full_refresh=False, push=True, wait=wait)
                push_seconds = time.monotonic() - push_started
                console.print("After the push and the verifying sync:")
                print_summary(reconciliation_counts(config))
                print_outbox(config)
    except MailbridgeExit as failure:
        if failure.args:
            err.print(f"[red]{_printable(failure.args[0])}[/red]")
        raise typer.Exit(1) from None

    pushed = f"; sync_and_push {push_seconds:.1f}s" if push_seconds is not None else ""
    console.print(
        f"Full sync of {contacts:,} contacts: {sync_seconds:.1f}s{pushed}; "
        f"demo total {time.monotonic() - started:.1f}s.\n"
        f"Warehouse: {_printable(warehouse)}  ·  Dagster UI: `make ui` (or `mailbridge ui`)"
    )
    if not matches:
        raise typer.Exit(1)


def print_outbox(config: MailbridgeConfig) -> None:
    """The outbox by target, action and status: what the push wrote and what the sync confirmed."""
    import duckdb

    with _reading(config) as readable, duckdb.connect(str(readable), read_only=True) as db:
        rows = db.execute(
            "select split_part(target, ':', 1), action, status, count(*) from ops.pushback_outbox "
            "group by all order by 1, 2, 3"
        ).fetchall()
    table = Table(title="Push-back outbox", header_style="bold")
    for column in ("target", "action", "status", "count"):
        table.add_column(column)
    for target, action, status, count in rows:
        table.add_row(_printable(target), _printable(action), _printable(status), f"{count:,}")
    console.print(table)


@app.command()
@_stoppable
def sync(
    full: Annotated[bool, typer.Option("--full", help="Re-read everything and replace the members.")] = False,
    incremental: Annotated[bool, typer.Option("--incremental", help="Read only what changed (default).")] = False,
    push: Annotated[
        bool, typer.Option("--push", help="Then push the queue and sync again to verify (the sync_and_push job).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --push: report what would be written.")] = False,
    wait: WaitOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Run a full or incremental sync through Dagster and print the results per list."""
    if full and incremental:
        err.print("[red]Choose one of --full and --incremental.[/red]")
        raise typer.Exit(2)
    if push and full:
        err.print("[red]--push runs an incremental sync; run `mailbridge sync --full` first if you need one.[/red]")
        raise typer.Exit(2)
    if dry_run and not push:
        err.print("[red]--dry-run goes with --push (or use `mailbridge push --dry-run`).[/red]")
        raise typer.Exit(2)
    config = _load(config_file)
    _check_environment(config)
    try:
        run_sync_job(config, full_refresh=full, push=push, dry_run=dry_run, wait=wait)
        print_summary(reconciliation_counts(config))
        print_read_failures(config)
    except MailbridgeExit as failure:
        if failure.args:
            err.print(f"[red]{_printable(failure.args[0])}[/red]")
        raise typer.Exit(1) from None


@app.command()
@_stoppable
def status(config_file: ConfigOption = None) -> None:
    """Print the latest reconciliation: counts per list and result."""
    config = _load(config_file)
    try:
        print_summary(reconciliation_counts(config))
    except MailbridgeExit as failure:
        err.print(f"[red]{_printable(failure.args[0])}[/red]")
        raise typer.Exit(1) from None


@app.command()
@_stoppable
def report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    config_file: ConfigOption = None,
) -> None:
    """One self-contained HTML report (opens offline): campaign KPIs, list growth, reconciliation, pushes, consent."""
    from mailbridge.report import write_report

    config = _load(config_file)
    with _reading_synced(config) as readable:
        written = write_report(readable, out)
    console.print(f"[green]✓[/green] report written to {_printable(written)}")


@app.command()
@_stoppable
def explain(
    address: Annotated[str, typer.Argument(help="The email address, spelt any way.")],
    config_file: ConfigOption = None,
) -> None:
    """What happened to this address and why: both sides' data, the result, the rule and the event log."""
    from mailbridge.explain import explain_address

    config = _load(config_file)
    with _reading_synced(config) as readable:
        found = explain_address(readable, address, console)
    if not found:
        raise typer.Exit(1)


@app.command()
@_stoppable
def decide(
    address: Annotated[str, typer.Argument(help="The email address.")],
    list_link: Annotated[str, typer.Option("--list", help="The list link id from mailbridge.yaml.")],
    action: Annotated[str, typer.Option("--action", help="transmit, start_doi, unsubscribe, set_status, ...")],
    by: Annotated[str, typer.Option(help="Who decides (kept with the decision).")] = os.environ.get("USER", "cli"),
    note: Annotated[str | None, typer.Option(help="Why.")] = None,
    wait: WaitOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Decide an action for one address on one list. It holds until executed or the state changes."""
    from mailbridge.decisions import DecisionError, record_decision

    config = _load(config_file)
    try:
        with _writing(config, "mailbridge decide", wait):
            decision = record_decision(config.warehouse_path(), address, list_link, action, by, note)
    except DecisionError as error:
        err.print(f"[red]{_printable(error)}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"[green]✓[/green] {_printable(decision.action)} for {_printable(decision.email_key)} on "
        f"{_printable(decision.list_link_id)} (now {_printable(decision.result)}); decision {decision.decision_id}"
    )
    if decision.warning:
        err.print(f"[yellow]{_printable(decision.warning)}[/yellow]")


@app.command()
@_stoppable
def push(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be written, to whom and why.")] = False,
    allow_permanent_delete: Annotated[
        bool,
        typer.Option(
            "--allow-permanent-delete",
            help="Run decided `delete_permanent` actions: the ESP erases the member (irreversible).",
        ),
    ] = False,
    wait: WaitOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Write the ready actions of the push-back queue to the ESPs and the CRM; every attempt lands in
    ops.pushback_outbox."""
    import uuid

    from pipelines.pushback import PushAccountFailed, PushQueueError, PushRefused, push

    config = _load(config_file)
    run_id = f"push-{uuid.uuid4().hex[:12]}"
    account_failure: PushAccountFailed | None = None
    try:
        with (
            _writing(config, "mailbridge push" + (" --dry-run" if dry_run else ""), wait, run_id=run_id),
            console.status("Pushing…" if not dry_run else "Planning…"),
        ):
            report = push(config, run_id=run_id, dry_run=dry_run, allow_permanent_delete=allow_permanent_delete)
    except PushRefused as refused:
        err.print(f"[red]Push refused, nothing was written:[/red] {_printable(refused.verdict.explain())}")
        raise typer.Exit(1) from None
    except PushQueueError as error:
        err.print(f"[red]{_printable(error)}[/red]")
        raise typer.Exit(1) from None
    except PushAccountFailed as failed:
        account_failure, report = failed, failed.report
    if report.gate is not None and not report.gate.allowed:
        err.print(f"[yellow]A real push would be refused now:[/yellow] {_printable(report.gate.explain())}")
    if report.gate is not None and report.gate.aborted_lists:
        err.print(
            "[yellow]Held (their latest extraction did not complete):[/yellow] "
            + _printable(", ".join(report.gate.aborted_lists))
        )
    if report.queue_refreshed:
        console.print("The queue was rebuilt first: decisions were made since the last sync.")
    title = "Dry run: what a push would write (nothing was changed)" if dry_run else f"Push {run_id}"
    table = Table(title=title, header_style="bold")
    for column in ("list link", "action", "from", "outcome", "count", "for example"):
        table.add_column(column)
    for (link, action, source), counts in sorted(report.counts.items()):
        for status, count in sorted(counts.items()):
            samples = ", ".join(report.samples[(link, action, source)])
            table.add_row(*map(_printable, (link, action, source, status)), f"{count:,}", _printable(samples))
    console.print(table if report.counts else "Nothing to push: the queue has no ready action.")
    if not dry_run:
        console.print(
            f"{report.write_requests} ESP write requests, {report.crm_statements} CRM statements, "
            f"{report.tasks_cleared} CRM tasks cleared, {report.assignments_removed} CRM assignments removed "
            f"after ESP deletes; {report.confirmed} earlier actions confirmed by the sync."
        )
    if report.reactions_written:
        console.print(
            f"{report.reactions_written:,} recipients' mailing reactions "
            + ("would be written" if dry_run else "written")
            + " to the CRM (crm.mailing_reactions)."
        )
    if account_failure is not None:
        for failure in account_failure.errors:
            err.print(
                "[red]Credentials refused, nothing sent for this account (its actions stay ready):[/red] "
                + _printable(failure)
            )
        raise typer.Exit(1)


@app.command()
@_stoppable
def send(
    campaign: Annotated[str, typer.Argument(help="The ESP's campaign id.")],
    account: Annotated[str | None, typer.Option(help="The ESP account (needed when several are configured).")] = None,
    max_age: Annotated[
        int | None, typer.Option(help="Minutes since the list's reconciliation (default: gating.send_max_age_minutes).")
    ] = None,
    wait: WaitOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Send a campaign, but only if its list reconciled recently and no opt-out waits to be pushed."""
    from pipelines.http import EspApiError
    from pipelines.send import send_campaign

    config = _load(config_file)
    try:
        with _writing(config, f"mailbridge send {campaign}", wait):
            result = send_campaign(config, campaign, account_name=account, max_age_minutes=max_age)
    except ConfigError as error:
        err.print(f"[red]{_printable(error)}[/red]")
        raise typer.Exit(1) from None
    except EspApiError as error:
        err.print(f"[red]The ESP refused: {_printable(error)}[/red]")
        raise typer.Exit(1) from None
    where = f"{result.esp_account}/{result.esp_list_id}" + (f" ({result.list_link_id})" if result.list_link_id else "")
    if not result.sent:
        err.print(f"[red]Send refused[/red] for campaign {_printable(campaign)} to {_printable(where)}:")
        for reason in result.reasons:
            err.print(f"  - {_printable(reason)}")
        raise typer.Exit(1)
    console.print(f"[green]✓[/green] campaign {_printable(campaign)} sent to {_printable(where)}")


@app.command()
@_stoppable
def export(
    out: Annotated[Path, typer.Option(help="CSV file to write.")] = Path("crm_changes.csv"),
    config_file: ConfigOption = None,
) -> None:
    """Write the queue's ready CRM changes as CSV for a manual import (RFC 4180, formula-safe)."""
    from mailbridge.export import export_crm_changes

    config = _load(config_file)
    with _reading(config) as readable:
        count = export_crm_changes(readable, out)
    console.print(f"[green]✓[/green] {count:,} CRM changes written to {_printable(out)}")


@app.command()
def sandbox(
    scenario: Annotated[Path | None, typer.Option(help="Scenario file or folder to load.")] = None,
    port: Annotated[int, typer.Option(help="Loopback port.")] = DEFAULT_SANDBOX_PORT,
) -> None:
    """Serve the sandbox ESPs (stateful API emulators) on 127.0.0.1 until stopped."""
    import gc

    from sandbox.runtime import EMULATED_TABLES, build_sandbox
    from sandbox.scenario import Scenario, load_scenario
    from sandbox.server import serve_forever

    if scenario is not None:
        world = load_scenario(scenario, only=EMULATED_TABLES)
    else:
        from sandbox.generator import ACCOUNTS, LINKS, today_utc

        world = Scenario("empty", today_utc(), list(ACCOUNTS), list(LINKS), tables=_empty_tables())
    served = build_sandbox(world, release_tables=True)
    keys = ", ".join(f"{account.name}={account.api_key}" for account in world.accounts)
    err.print(f"sandbox: {world.name} on http://127.0.0.1:{port} (sandbox keys: {keys})", markup=False)
    # what was loaded lives until the process ends: the collector's full passes leave it out
    gc.collect()
    gc.freeze()
    serve_forever(served.app, port)


def _empty_tables() -> dict[str, Any]:
    import polars as pl

    from sandbox.scenario import TABLE_SCHEMAS

    return {name: pl.DataFrame(schema=schema) for name, schema in TABLE_SCHEMAS.items()}


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the scenario to.")],
    contacts: Annotated[int, typer.Option(help="CRM contacts.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    campaigns: Annotated[int, typer.Option(help="Sent campaigns per ESP list.")] = 2,
) -> None:
    """Generate a scenario folder (Parquet tables + scenario.yaml with the expected counts)."""
    from sandbox.generator import generate_scenario

    with console.status(f"Generating {contacts:,} contacts…"):
        scenario = generate_scenario(contacts=contacts, seed=seed, campaigns=campaigns)
        scenario.save(out)
    console.print(f"[green]✓[/green] {_printable(scenario.description)} → {_printable(out)}")


@app.command("load-crm")
def load_crm(
    scenario: Annotated[Path, typer.Argument(help="Scenario file or folder.")],
    config_file: ConfigOption = None,
) -> None:
    """Write a scenario's CRM side into the configured CRM database (its tables are replaced)."""
    from sandbox.crm_db import write_crm
    from sandbox.scenario import load_scenario

    config = _load(config_file)
    world = load_scenario(scenario)
    url = _crm_url(config)
    with console.status("Writing the CRM tables…"):
        write_crm(world.tables, url, config.crm)
    console.print(f"[green]✓[/green] {world.table('crm_contacts').height:,} contacts written")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port of the Dagster UI.")] = 3000,
    config_file: ConfigOption = None,
) -> None:
    """Start the Dagster UI (dagster dev) on this project; runs of `demo` and `sync` show in its history."""
    config = _load(config_file)
    dagster_home(config)
    from assets.project import REPO_ROOT

    executable = Path(sys.executable).parent / "dagster"
    command = [str(executable) if executable.exists() else "dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml")]
    console.print(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={_printable(os.environ['DAGSTER_HOME'])})")
    raise typer.Exit(subprocess.call(guarded([*command, "-p", str(port)]), cwd=REPO_ROOT))


@app.command()
def simulate(
    seed: Annotated[
        list[int] | None, typer.Option(help="Replay this seed (repeat the option for several, side by side).")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Run M seeds, from --first on (ignored with --seed).")] = 20,
    first: Annotated[int, typer.Option(help="The first seed of --seeds.")] = 1,
    steps: Annotated[int, typer.Option(help="Steps per seed (a closing sync → push → sync is added).")] = 30,
    batch: Annotated[int, typer.Option(help="Seeds side by side in one world.")] = 50,
    shrink: Annotated[bool, typer.Option(help="Shrink each kind of break to its shortest history.")] = True,
    shrink_seconds: Annotated[float, typer.Option(help="Time budget for shrinking.")] = 900.0,
    keep: Annotated[Path | None, typer.Option(help="Keep the worlds (warehouse, CRM, config) in this folder.")] = None,
) -> None:
    """Seeded simulation of the whole loop (CRM ↔ mailbridge ↔ sandbox ESP) against a reference model;
    prints every invariant break with its seed and shrunk history."""
    from sandbox.simulation import simulate as run_simulation

    _quiet_libraries()
    chosen = list(seed) if seed else list(range(first, first + seeds))
    report = run_simulation(
        chosen,
        steps,
        folder=keep,
        batch_size=batch,
        shrink=shrink,
        shrink_seconds=shrink_seconds,
        progress=lambda line: err.print(line, markup=False, highlight=False),
    )
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    if report.findings:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except ConfigError as error:  # a configuration problem found late still gets a message, not a traceback
        err.print(f"[red]Configuration error:[/red] {_printable(error)}")
        sys.exit(2)


if __name__ == "__main__":
    main()
