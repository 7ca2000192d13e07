"""Dagster resources, configured from environment variables only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from dagster_dbt import DbtCliResource
from dagster_dlt import DagsterDltResource
from packaging import version

from assets.project import DBT_PROJECT_DIR, project_config
from mailbridge.child import real_dbt


class WarehouseResource(ConfigurableResource):  # type: ignore[misc,type-arg]
    """The DuckDB warehouse file every asset writes to (one writer at a time)."""

    path: str

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[WarehouseResource]:
        """A run holds the warehouse lock from its start to its end (at once when `mailbridge
        sync` holds it already), and releases runs whose process died holding it."""
        from assets.runs import interrupt_requested, process_tags, release_abandoned_runs
        from mailbridge.warehouse_lock import hold_warehouse

        run = context.dagster_run
        instance = context.instance
        if run is not None and instance is not None:
            instance.add_run_tags(run.run_id, process_tags())
        notify = context.log.warning if context.log is not None else None
        with hold_warehouse(
            Path(self.path),
            f"Dagster run of {run.job_name}" if run is not None else "Dagster",
            run_id=run.run_id if run is not None else None,
            timeout=project_config().warehouse_wait_seconds,
            notify=notify,
            stop_requested=interrupt_requested,
        ) as hold:
            if hold.outermost and instance is not None:
                own = run.run_id if run is not None else None
                for line in release_abandoned_runs(instance, own_run_id=own, previous=hold.previous):
                    if notify is not None:
                        notify(line)
            yield self


def dbt_executable() -> str:
    """`mailbridge-dbt` beside this interpreter: dbt that dies with the process that started it
    (mailbridge.child); plain dbt where the project is not installed with it."""
    guarded = Path(sys.executable).parent / "mailbridge-dbt"
    return str(guarded) if guarded.is_file() else real_dbt()


# A production build: models and data tests. The rules' unit tests read no warehouse and do not
# change from run to run: the test suite runs them (`run_dbt_build(unit_tests=True)`).
DBT_BUILD = ("build", "--exclude-resource-type", "unit_test")
RUN_ID_ENV = "MAILBRIDGE_RUN_ID"


@contextmanager
def dbt_run_id(run_id: str) -> Iterator[None]:
    """dbt started inside reads `run_id` (the macro run_id()) from MAILBRIDGE_RUN_ID: a `--vars`
    that changes every run would make dbt parse the whole project again each time."""
    before = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = before


def dbt_target_path(warehouse: Path) -> Path:
    """dbt's target folder for the builds of one warehouse, beside it: the same one for every
    sync and push, so dbt parses only what changed since the last build (its partial-parse file
    is valid for one warehouse path only: the profile is part of it), and runs leave no folder
    each behind."""
    return warehouse.resolve().parent / "dbt_target"


def run_dbt_build(
    warehouse: Path,
    target_path: Path,
    run_id: str = "manual",
    select: str | None = None,
    unit_tests: bool | None = None,
    full_refresh: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`dbt build` of the project (or of the `select`ed models and their data tests) into
    `warehouse`, in its own process (dbt-duckdb keeps its connection open in-process); the
    caller decides what a failure means. The unit tests of the rules run with a whole build
    unless `unit_tests` is false: they do not read the warehouse. `full_refresh` builds the
    incremental models from scratch, as a full sync does."""
    selection = ["--select", select] if select else []
    if full_refresh:
        selection.append("--full-refresh")
    if not (unit_tests if unit_tests is not None else select is None):
        selection += ["--exclude-resource-type", "unit_test"]
    command = [
        dbt_executable(),
        "build",
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target_path),
        *selection,
        "--quiet",
    ]
    return subprocess.run(
        command,
        env={**os.environ, "MAILBRIDGE_WAREHOUSE": str(warehouse), RUN_ID_ENV: run_id},
        capture_output=True,
        text=True,
    )


class MailbridgeDbtCliResource(DbtCliResource):
    """dagster-dbt's resource, without the `dbt --version` process it starts on every run: the
    dbt it runs is the dbt-core installed beside it (mailbridge-dbt is a guard around it)."""

    @cached_property
    def _cli_version(self) -> version.Version:
        from dbt.version import __version__

        return version.parse(__version__)

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        """No dbt adapter in the Dagster process: it serves only `fetch_row_counts` and
        `fetch_column_metadata`, which mailbridge does not ask for, and loading dbt's profile,
        project and adapter for it took seconds of every build."""
        return None


def build_resources() -> dict[str, object]:
    return {
        "dlt": DagsterDltResource(),
        "dbt": MailbridgeDbtCliResource(
            project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
        ),
        "warehouse": WarehouseResource(path=EnvVar("MAILBRIDGE_WAREHOUSE")),
    }
