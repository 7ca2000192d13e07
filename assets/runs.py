"""Runs whose process is gone: marked failed, and the warehouse pool slots they held freed.

Runs execute in the process that started them (in-process executor), so a run whose process
was killed (SIGKILL, the OOM killer) stays STARTED and keeps its `duckdb_warehouse` slot, and
every later run waits for that slot forever. Each run records its process (pid, host, start
time) in its tags; whoever takes the warehouse lock next looks for runs whose process is gone.
"""

from __future__ import annotations

import os
import socket

import dagster as dg
from dagster._utils.interrupts import check_captured_interrupt

from assets.project import WAREHOUSE_POOL
from mailbridge.warehouse_lock import Holder, process_is_alive, process_start_time

PID_TAG = "mailbridge/pid"
HOST_TAG = "mailbridge/host"
PROCESS_STARTED_TAG = "mailbridge/process_started"
# NOT_STARTED too: a sync killed between creating its run and starting it leaves it so
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def process_tags() -> dict[str, str]:
    """Tags that say which process executes a run."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    started = process_start_time(os.getpid())
    if started is not None:
        tags[PROCESS_STARTED_TAG] = started
    return tags


def _process_gone(tags: dict[str, str]) -> bool:
    pid = tags.get(PID_TAG, "")
    if not pid.isdigit() or tags.get(HOST_TAG) != socket.gethostname():
        return False  # not ours to judge: no process recorded, or on another machine
    return not process_is_alive(int(pid), tags.get(PROCESS_STARTED_TAG))


def release_abandoned_runs(
    instance: dg.DagsterInstance, *, own_run_id: str | None, previous: Holder | None
) -> list[str]:
    """Mark failed every unfinished run whose process is gone (or that held the warehouse lock
    when its process died), free the pool slots they and finished runs still hold; one line
    per run for the user."""
    lines: list[str] = []
    released: set[str] = set()
    for run in instance.get_runs(dg.RunsFilter(statuses=UNFINISHED)):
        if run.run_id == own_run_id:
            continue
        held_the_lock = previous is not None and previous.run_id == run.run_id
        if not (held_the_lock or _process_gone(dict(run.tags))):
            continue
        pid = run.tags.get(PID_TAG, previous.pid if held_the_lock and previous else "?")
        instance.report_run_failed(
            run, message=f"the process that ran it (pid {pid}) ended without finishing it: killed or out of memory"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.add(run.run_id)
        lines.append(
            f"run {run.run_id} ({run.job_name}) was left unfinished by process {pid}, which is gone: "
            "marked failed, its warehouse slot freed"
        )
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return lines
    info = storage.get_concurrency_info(WAREHOUSE_POOL)
    holding = {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}
    for run_id in sorted(holding - released - {own_run_id}):
        holder = instance.get_run_by_id(run_id)
        if holder is None or holder.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            lines.append(f"run {run_id} had finished but still held a warehouse slot: freed")
    return lines


def stop_run(instance: dg.DagsterInstance, run_id: str, reason: str) -> None:
    """What a process ending by force does last: its run failed, its slots free."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, message=reason)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def interrupt_requested() -> bool:
    """Has Dagster held back a SIGINT or SIGTERM for this run (it does until a step takes it)?"""
    return check_captured_interrupt()
