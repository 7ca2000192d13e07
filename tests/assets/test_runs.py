"""Runs whose process is gone: marked failed, their warehouse pool slot freed."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg


def _run_record(
    instance: dg.DagsterInstance, tags: dict[str, str], status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED
) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="incremental_sync", run_id=run_id, status=status, tags=tags))
    return run_id


def test_runs_whose_process_is_gone_are_failed_and_free_their_slot(tmp_path: Path) -> None:
    from assets.project import WAREHOUSE_POOL
    from assets.runs import HOST_TAG, PID_TAG, process_tags, release_abandoned_runs

    with dg.instance_for_test(
        temp_dir=str(tmp_path), overrides={"concurrency": {"pools": {"default_limit": 1}}}
    ) as instance:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        dead = _run_record(instance, {PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname()})
        alive = _run_record(instance, process_tags())
        elsewhere = _run_record(instance, {PID_TAG: str(gone.pid), HOST_TAG: "another-machine"})
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, dead, "raw_crm", 0).is_claimed

        lines = release_abandoned_runs(instance, own_run_id=None, previous=None)

        assert len(lines) == 1 and dead in lines[0] and str(gone.pid) in lines[0]
        statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in (dead, alive, elsewhere)}  # type: ignore[union-attr]
        assert statuses == {
            dead: dg.DagsterRunStatus.FAILURE,
            alive: dg.DagsterRunStatus.STARTED,
            elsewhere: dg.DagsterRunStatus.STARTED,
        }
        assert storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots == []
        # the next run's step gets the slot at once
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, alive, "raw_crm", 0).is_claimed


def test_the_run_that_held_the_warehouse_when_its_process_died_is_failed(tmp_path: Path) -> None:
    from assets.runs import release_abandoned_runs
    from mailbridge.warehouse_lock import Holder

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        # started from the UI: no process recorded in its tags, but the lock file named it
        orphan = _run_record(instance, {})
        other = _run_record(instance, {})
        previous = Holder(pid=999_999, host="another-machine", command="Dagster run", started_at="", run_id=orphan)

        lines = release_abandoned_runs(instance, own_run_id=None, previous=previous)

        assert len(lines) == 1 and orphan in lines[0] and "999999" in lines[0]
        assert instance.get_run_by_id(orphan).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        assert instance.get_run_by_id(other).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]


def test_a_run_whose_process_died_before_it_started_is_failed_too(tmp_path: Path) -> None:
    """A sync killed between creating its run and starting it leaves the run NOT_STARTED: it
    would show as waiting for ever."""
    from assets.runs import HOST_TAG, PID_TAG, process_tags, release_abandoned_runs

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        dead = _run_record(
            instance, {PID_TAG: str(gone.pid), HOST_TAG: socket.gethostname()}, dg.DagsterRunStatus.NOT_STARTED
        )
        starting = _run_record(instance, process_tags(), dg.DagsterRunStatus.NOT_STARTED)
        queued_by_the_ui = _run_record(instance, {}, dg.DagsterRunStatus.NOT_STARTED)

        lines = release_abandoned_runs(instance, own_run_id=None, previous=None)

        assert len(lines) == 1 and dead in lines[0]
        statuses = {run: instance.get_run_by_id(run).status for run in (dead, starting, queued_by_the_ui)}  # type: ignore[union-attr]
        assert statuses == {
            dead: dg.DagsterRunStatus.FAILURE,
            starting: dg.DagsterRunStatus.NOT_STARTED,
            queued_by_the_ui: dg.DagsterRunStatus.NOT_STARTED,
        }
