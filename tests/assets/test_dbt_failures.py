"""A failed dbt build in a sync names each failed test with the rows it found, in the message
the sync prints (not only dbt's "Got 1 result, configured to fail if != 0")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from mailbridge.config import load_config
from pipelines.runner import run_extractions
from sandbox.crm_db import write_crm
from tests.conftest import RunningEmulator, write_project_config


def test_a_failed_dbt_test_is_named_with_its_offending_rows(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator: RunningEmulator = serve_mailchimp(small_scenario)
    config = load_config(
        write_project_config(
            tmp_path,
            base_url=emulator.base_url,
            crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}",
            accounts=["brand_main"],
        )
    )
    write_crm(small_scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", small_scenario.account("brand_main").api_key)
    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(config.warehouse_path()))
    run_extractions(config, full_refresh=True, run_id="loaded")
    with duckdb.connect(str(config.warehouse_path())) as db:
        # a raw copy an older extraction could leave: contact 3 twice
        db.execute(
            "insert into raw_crm.contacts by name select * replace ("
            "'carla.zwei@beispiel.de' as email, 'carla.zwei@beispiel.de' as email_key, 'zweit' as row_hash) "
            "from raw_crm.contacts where contact_id = '3'"
        )

    from assets.resources import build_resources
    from assets.transform import mailbridge_dbt_models
    from mailbridge.cli import _failure_messages

    result = dg.materialize([mailbridge_dbt_models], resources=build_resources(), raise_on_error=False)
    assert not result.success
    messages = "\n".join(_failure_messages(result))
    assert "unique_stg_crm__contacts_crm_contact_id" in messages
    assert "Got 1 result, configured to fail if != 0" in messages
    assert "unique_field=3, n_records=2" in messages
    assert "downstream of these were skipped" in messages
    assert "Traceback" not in messages
