"""The warehouse lock: one writer at a time, a dead holder never blocks, readers read a snapshot
while a writer writes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO_ROOT

# a process that holds the warehouse like a sync: with `write`, it also has the DuckDB file open
# and has changed it, as a sync has in the middle of its run; it lets go when its stdin closes
HOLDER = """
import sys
from pathlib import Path

import duckdb

from mailbridge.warehouse_lock import hold_warehouse

warehouse, mode = Path(sys.argv[1]), sys.argv[2]
with hold_warehouse(warehouse, "mailbridge sync (full_sync)", run_id="run-of-the-holder", timeout=0):
    db = duckdb.connect(str(warehouse)) if mode == "write" else None
    if db is not None:
        db.execute("delete from marts.fct_list_reconciliation")
        db.execute("insert into marts.fct_list_reconciliation values ('newsletter_main', 'conflict', 'mid-sync')")
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextmanager
def holding(warehouse: Path, mode: str = "hold") -> Iterator[subprocess.Popen[str]]:
    """Another process holds the warehouse (and with mode "write", has it open and changed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(warehouse), mode],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        yield process
    finally:
        if process.poll() is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def small_warehouse(path: Path) -> Path:
    """A warehouse with the reconciliation mart (what `status` reads) and the queue (`export`)."""
    with duckdb.connect(str(path)) as db:
        db.execute("create schema marts")
        db.execute("create table marts.fct_list_reconciliation (list_link_id varchar, result varchar, note varchar)")
        db.execute(
            "insert into marts.fct_list_reconciliation values "
            "('newsletter_main', 'in_sync', null), ('newsletter_main', 'in_sync', null), "
            "('newsletter_main', 'not_in_esp', null)"
        )
        db.execute(
            "create table marts.fct_pushback_queue as select 'a1' as action_id, 'set_status' as action, "
            "'newsletter_main' as list_link_id, 'NL' as crm_list_id, 7 as crm_contact_id, "
            "'anna@beispiel.de' as email_address, 'unsubscribed' as resolved_status, "
            "'unsubscribed' as crm_target_status, 'unsubscribed' as esp_status, 'esp_optout_newer' as rule, "
            "'policy' as action_source, 'crm' as target, 'ready' as queue_status"
        )
    return path


def test_a_writer_waits_for_the_holder_and_gives_up_naming_it(tmp_path: Path) -> None:
    from mailbridge.warehouse_lock import WarehouseBusy, current_holder, hold_warehouse

    warehouse = tmp_path / "warehouse.duckdb"
    notices: list[str] = []
    with holding(warehouse) as holder:
        started = time.monotonic()
        with (
            pytest.raises(WarehouseBusy) as busy,
            hold_warehouse(warehouse, "mailbridge push", timeout=1.0, notify=notices.append),
        ):
            pytest.fail("the warehouse was held by another process")
        assert 0.9 < time.monotonic() - started < 5
        assert current_holder(warehouse) is not None
    message = str(busy.value)
    for part in ("mailbridge sync (full_sync)", "run-of-the-holder", f"pid {holder.pid}", "gave up after waiting 1s"):
        assert part in message, message
    assert busy.value.holder is not None and busy.value.holder.pid == holder.pid
    assert len(notices) == 1 and notices[0].startswith("Waiting:") and f"pid {holder.pid}" in notices[0]
    # once it let go, the warehouse is free at once
    with hold_warehouse(warehouse, "mailbridge push", timeout=0) as hold:
        assert hold.outermost and hold.previous is None
    assert current_holder(warehouse) is None


def test_a_killed_holder_blocks_no_one_and_is_named_to_the_next(tmp_path: Path) -> None:
    from mailbridge.warehouse_lock import hold_warehouse

    warehouse = tmp_path / "warehouse.duckdb"
    with holding(warehouse) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        with hold_warehouse(warehouse, "mailbridge sync (incremental_sync)", timeout=0) as hold:
            assert hold.previous is not None
            assert (hold.previous.pid, hold.previous.run_id) == (holder.pid, "run-of-the-holder")
            assert hold.previous.is_gone()
            # nested holds in one process are the same hold: no waiting for oneself
            with hold_warehouse(warehouse, "push", timeout=0) as inner:
                assert not inner.outermost


def test_readers_see_the_state_before_the_write_while_it_runs(tmp_path: Path) -> None:
    from mailbridge.warehouse_lock import read_warehouse, snapshot_path

    warehouse = small_warehouse(tmp_path / "warehouse.duckdb")
    query = "select result, count(*) from marts.fct_list_reconciliation group by all order by all"
    notices: list[str] = []
    with holding(warehouse, "write") as holder:
        with (
            read_warehouse(warehouse, timeout=5, notify=notices.append) as readable,
            duckdb.connect(str(readable), read_only=True) as db,
        ):
            assert readable == snapshot_path(warehouse)
            assert db.execute(query).fetchall() == [("in_sync", 2), ("not_in_esp", 1)]
        assert len(notices) == 1 and "is writing the warehouse" in notices[0] and f"pid {holder.pid}" in notices[0]
    # the writer is done: readers read the warehouse itself again
    with read_warehouse(warehouse, timeout=5) as readable, duckdb.connect(str(readable), read_only=True) as db:
        assert readable == warehouse
        assert db.execute(query).fetchall() == [("conflict", 1)]


def test_the_snapshot_takes_what_a_killed_writer_committed(tmp_path: Path) -> None:
    from mailbridge.warehouse_lock import hold_warehouse, snapshot_path

    warehouse = small_warehouse(tmp_path / "warehouse.duckdb")
    with holding(warehouse, "write") as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with (
        hold_warehouse(warehouse, "mailbridge sync", timeout=0),
        duckdb.connect(str(snapshot_path(warehouse)), read_only=True) as db,
    ):
        rows = db.execute("select result from marts.fct_list_reconciliation").fetchall()
    assert rows == [("conflict",)]


def test_a_write_inside_a_read_of_the_same_process_is_refused_not_waited_for(tmp_path: Path) -> None:
    from mailbridge.warehouse_lock import hold_warehouse, read_warehouse

    warehouse = small_warehouse(tmp_path / "warehouse.duckdb")
    with read_warehouse(warehouse, timeout=5) as readable:
        assert readable == warehouse
        with pytest.raises(RuntimeError, match="held for reading"), hold_warehouse(warehouse, "push", timeout=30):
            pytest.fail("a write inside a read")
    with hold_warehouse(warehouse, "push", timeout=0) as hold:
        assert hold.outermost
