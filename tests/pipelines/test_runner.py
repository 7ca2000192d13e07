"""Extraction runs after an interrupted one: what it left pending is settled, then new data is read."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from mailbridge.config import load_config
from pipelines.runner import extraction_named, run_extraction
from sandbox.crm_db import write_crm
from sandbox.scenario import load_scenario
from tests.conftest import SCENARIOS, write_project_config


def names(warehouse: Path) -> dict[str, str]:
    with duckdb.connect(str(warehouse), read_only=True) as db:
        rows = db.execute("select contact_id, first_name from raw_crm.contacts where _dlt_valid_to is null").fetchall()
    return {str(contact_id): first for contact_id, first in rows}


def rename(url: str, contact_id: int, first_name: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("update kontakte set vorname = :name where kontakt_id = :id"),
            {"name": first_name, "id": contact_id},
        )
    engine.dispose()


def test_the_run_after_a_killed_one_loads_what_it_left_and_reads_the_new_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    config = load_config(write_project_config(tmp_path, base_url=None, crm_url=url))
    write_crm(load_scenario(SCENARIOS / "small.yaml").tables, url, config.crm)
    run_extraction(extraction_named(config, "crm", full_refresh=True, run_id="first"))
    # a sync killed after extracting, before loading: its package stays pending
    rename(url, 1, "Annika")
    killed = extraction_named(config, "crm", full_refresh=False, run_id="killed")
    killed.pipeline.extract(killed.source)
    killed.pipeline.normalize()
    assert killed.pipeline.has_pending_data
    # the CRM moves on; the next sync must read it, not only finish the killed run's load
    rename(url, 2, "Bernhard")
    run_extraction(extraction_named(config, "crm", full_refresh=False, run_id="next"))
    seen = names(config.warehouse_path())
    assert (seen["1"], seen["2"]) == ("Annika", "Bernhard")


def test_a_package_that_cannot_be_loaded_is_dropped_not_retried_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    config = load_config(write_project_config(tmp_path, base_url=None, crm_url=url))
    write_crm(load_scenario(SCENARIOS / "small.yaml").tables, url, config.crm)
    run_extraction(extraction_named(config, "crm", full_refresh=True, run_id="first"))
    stuck = extraction_named(config, "crm", full_refresh=False, run_id="stuck")
    stuck.pipeline.extract(stuck.source)
    stuck.pipeline.normalize()
    # its load fails every time (a broken package): the next run drops it and reads anew
    load = type(stuck.pipeline).load

    def failing_load(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.has_pending_data and not getattr(self, "_failed_once", False):
            self._failed_once = True
            raise RuntimeError("the package cannot be loaded")
        return load(self, *args, **kwargs)

    monkeypatch.setattr(type(stuck.pipeline), "load", failing_load)
    rename(url, 2, "Bernhard")
    nxt = extraction_named(config, "crm", full_refresh=False, run_id="next")
    run_extraction(nxt)
    assert names(config.warehouse_path())["2"] == "Bernhard"
    assert not nxt.pipeline.has_pending_data
