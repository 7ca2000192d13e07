"""A push killed with SIGKILL between batches: the rerun completes, every action is applied
once, and the outbox stays consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from mailbridge.config import load_config
from pipelines.mailchimp.helpers import subscriber_hash
from pipelines.pushback import push
from pipelines.runner import run_extractions
from sandbox.crm_db import write_crm
from sandbox.faults import FaultSettings
from sandbox.scenario import load_scenario, with_crm_subscribers
from tests.conftest import REPO_ROOT, SCENARIOS, RunningEmulator, write_project_config
from tests.dbt.test_dbt_build import dbt_build
from tests.e2e.test_sync_cli import KEYS

pytestmark = pytest.mark.slow

BULK = 1500  # new CRM subscribers the policy transmits: three batches of 500 and a bit


def test_a_push_killed_between_batches_is_completed_by_the_rerun(tmp_path: Path, serve_mailchimp: Any) -> None:
    scenario = with_crm_subscribers(
        load_scenario(SCENARIOS / "pushback.yaml"), BULK, list_id="NL", first_id=1000, prefix="bulk"
    )
    ids = range(1000, 1000 + BULK)
    emulator: RunningEmulator = serve_mailchimp(scenario)

    config_file = write_project_config(
        tmp_path,
        base_url=emulator.base_url,
        crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}",
        accounts=["brand_main"],
        overrides={"policy": {"transmit_new_members": True}},
    )
    raw = yaml.safe_load(config_file.read_text("utf-8"))
    raw["esp_accounts"][0]["max_connections"] = 1  # one batch at a time, so there is a "between"
    config_file.write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
    config = load_config(config_file)
    write_crm(scenario.tables, config.crm.connection_url(config.base_dir), config.crm)
    warehouse = config.warehouse_path()
    os.environ.update(KEYS)
    run_extractions(config, full_refresh=True, run_id="before")
    dbt_build(tmp_path, warehouse)

    # every batch takes a second; kill the push once the first batch was answered
    emulator.emulator.faults.configure(FaultSettings(rate_slow=1.0, slow_seconds=1.0, path_contains="/lists/nl0001"))
    emulator.emulator.log.clear()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailbridge.cli", "push", "-c", str(config_file)],
        cwd=REPO_ROOT,
        env={**os.environ, **KEYS, "MAILBRIDGE_WAREHOUSE": str(warehouse)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not [e for e in emulator.emulator.log.snapshot() if e.method == "POST"]:
        assert process.poll() is None and time.monotonic() < deadline, "the push ended before its first batch"
        time.sleep(0.02)
    time.sleep(0.3)  # the answer reaches the outbox; the second batch is on its way
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    with duckdb.connect(str(warehouse), read_only=True) as db:
        before = dict(db.execute("select status, count(*) from ops.pushback_outbox group by status").fetchall())
    assert before.get("sent", 0) >= 500 and before.get("planned", 0) > 0, before

    emulator.emulator.faults.configure(FaultSettings())
    emulator.emulator.log.clear()
    rerun = push(config, run_id="rerun")
    assert rerun.interrupted == before["planned"]
    esp_sent = sum(
        count
        for (_, action, _), counts in rerun.counts.items()
        if action != "create_contact"
        for count in counts.values()
    )
    batch_members = sum(e.items or 0 for e in emulator.emulator.log.snapshot() if e.method == "POST")
    # only what the killed push had not recorded is sent again
    assert batch_members < BULK and batch_members <= esp_sent

    with duckdb.connect(str(warehouse), read_only=True) as db:
        per_action = db.execute(
            "select action_id, count(*) filter (where status = 'sent'), "
            "count(*) filter (where status not in ('sent', 'failed')), "
            "count(*) filter (where status = 'failed' and error_code <> 'interrupted') "
            "from ops.pushback_outbox group by action_id"
        ).fetchall()
    # each action written exactly once; every other attempt is a closed interruption
    assert per_action and all(sent == 1 and other == 0 and odd == 0 for _, sent, other, odd in per_action)
    members = emulator.state.account_named("brand_main").lists["nl0001"].members
    assert all(members[subscriber_hash(f"bulk{i}@beispiel.de")].status == "subscribed" for i in ids)

    # the next sync confirms all of it
    run_extractions(config, full_refresh=False, run_id="after")
    dbt_build(tmp_path, warehouse)
    after = push(config, run_id="verify")
    assert after.confirmed == len(per_action) and after.counts == {}
