"""An incremental sync ends where a full sync would: from one synced warehouse, a share of the
world changed on both sides (every kind: status, fields, address, delete, new), then one copy
synced incrementally (its incremental models built on) and one fully (`--full-refresh`). The
models `sandbox.compare` compares agree on every row."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mailbridge.config import MailbridgeConfig, load_config
from pipelines.runner import run_extractions
from sandbox.changes import WorldChanges, change_world
from sandbox.compare import mart_differences
from sandbox.crm_db import write_crm
from sandbox.generator import generate_scenario
from sandbox.scenario import Scenario
from tests.conftest import start_mailchimp, write_project_config
from tests.dbt.test_dbt_build import dbt_build

KEY_VARIABLES = {"brand_main": "MAILBRIDGE_MAILCHIMP_MAIN_KEY", "brand_shop": "MAILBRIDGE_MAILCHIMP_SHOP_KEY"}


def synced_both_ways(
    folder: Path, scenario: Scenario, fraction: float, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, WorldChanges]:
    """The world synced fully once, changed, then synced incrementally (the first warehouse) and
    fully (the second), both from a copy of the first sync's warehouse and dlt state."""
    emulator = start_mailchimp(scenario)
    for account in scenario.accounts:
        monkeypatch.setenv(KEY_VARIABLES[account.name], account.api_key)
    try:
        crm_url = f"sqlite:///{folder / 'crm.sqlite'}"
        configs: dict[str, MailbridgeConfig] = {}
        for kind in ("incremental", "full"):
            (folder / kind).mkdir()
            configs[kind] = load_config(
                write_project_config(folder / kind, base_url=emulator.base_url, crm_url=crm_url)
            )
        first = configs["incremental"]
        write_crm(scenario.tables, crm_url, first.crm)
        run_extractions(first, full_refresh=True, run_id="first")
        dbt_build(folder, first.warehouse_path(), "first")
        for name in ("warehouse.duckdb", "dlt"):
            source = folder / "incremental" / name
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, folder / "full" / name)
        changes = change_world(first, scenario, fraction)
        for kind, config in configs.items():
            run_extractions(config, full_refresh=kind == "full", run_id="second")
            dbt_build(folder, config.warehouse_path(), "second", full_refresh=kind == "full")
    finally:
        emulator.server.stop()
    return configs["incremental"].warehouse_path(), configs["full"].warehouse_path(), changes


def check_world(folder: Path, contacts: int, fraction: float, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = generate_scenario(contacts=contacts, seed=int(os.environ.get("MAILBRIDGE_TEST_SEED", "20")))
    incremental, full, changes = synced_both_ways(folder, scenario, fraction, monkeypatch)
    # every kind of change happened on both sides
    assert set(changes.crm) == set(changes.esp) == {"status", "fields", "address", "delete", "new"}, changes
    found = mart_differences(incremental, full)
    assert not found, "\n".join(difference.line() for difference in found[:10])


@pytest.mark.slow
def test_an_incremental_sync_agrees_with_a_full_one_after_changes_of_every_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_world(tmp_path, 600, 0.05, monkeypatch)


@pytest.mark.scale
def test_an_incremental_sync_agrees_with_a_full_one_at_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make scale`: 100k contacts (MAILBRIDGE_SCALE_CONTACTS), 1 % changed, every kind among them."""
    check_world(tmp_path, int(os.environ.get("MAILBRIDGE_SCALE_CONTACTS", "100000")), 0.01, monkeypatch)
