"""Dagster resources, configured from environment variables only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster import ConfigurableResource, EnvVar
from dagster_dbt import DbtCliResource
from dagster_dlt import DagsterDltResource

from assets.project import DBT_PROJECT_DIR
from mailbridge.child import real_dbt


class WarehouseResource(ConfigurableResource):  # type: ignore[misc,type-arg]
    """The DuckDB warehouse file every asset writes to (one writer at a time)."""

    path: str


def dbt_executable() -> str:
    """`mailbridge-dbt` beside this interpreter: dbt that dies with the process that started it
    (mailbridge.child); plain dbt where the project is not installed with it."""
    guarded = Path(sys.executable).parent / "mailbridge-dbt"
    return str(guarded) if guarded.is_file() else real_dbt()


def run_dbt_build(
    warehouse: Path,
    target_path: Path,
    run_id: str = "manual",
    select: str | None = None,
    unit_tests: bool | None = None,
) -> subprocess.CompletedProcess[str]:
    """`dbt build` of the project (or of the `select`ed models and their data tests) into
    `warehouse`, in its own process (dbt-duckdb keeps its connection open in-process); the
    caller decides what a failure means. The unit tests of the rules run with a whole build
    unless `unit_tests` is false: they do not read the warehouse."""
    selection = ["--select", select] if select else []
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
        "--vars",
        json.dumps({"run_id": run_id}),
        *selection,
        "--quiet",
    ]
    return subprocess.run(
        command, env={**os.environ, "MAILBRIDGE_WAREHOUSE": str(warehouse)}, capture_output=True, text=True
    )


def build_resources() -> dict[str, object]:
    return {
        "dlt": DagsterDltResource(),
        "dbt": DbtCliResource(
            project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
        ),
        "warehouse": WarehouseResource(path=EnvVar("MAILBRIDGE_WAREHOUSE")),
    }
