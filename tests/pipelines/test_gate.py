"""The push and send gates on a hand-made warehouse: age, failed dbt runs, aborted lists and
opt-outs that wait to be pushed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from pipelines.gate import push_gate, send_gate

RECONCILED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "gate.duckdb"))
    connection.execute("""
        create schema marts; create schema ops;
        create table marts.fct_list_reconciliation (
            list_link_id varchar, email_key varchar, result varchar, reconciled_at timestamptz);
        create table marts.fct_pushback_queue (
            action_id varchar, list_link_id varchar, email_key varchar, email_address varchar,
            action varchar, result varchar, queue_status varchar);
        create table ops.pushback_outbox (action_id varchar, status varchar);
        create table ops.dbt_runs (
            invocation_id varchar, run_id varchar, finished_at timestamptz, nodes integer,
            failures integer, failed_nodes varchar);
    """)
    connection.executemany(
        "insert into marts.fct_list_reconciliation values (?, ?, ?, ?)",
        [
            ["news", "a@x.de", "in_sync", RECONCILED],
            ["news", "b@x.de", "conflict", RECONCILED],
            ["shop", "c@x.de", "aborted", RECONCILED],
        ],
    )
    connection.execute("insert into ops.dbt_runs values ('i1', 'r1', ?, 90, 0, null)", [RECONCILED])
    return connection


def test_a_fresh_clean_reconciliation_may_be_pushed_and_aborted_lists_are_held(db: duckdb.DuckDBPyConnection) -> None:
    verdict = push_gate(db, 60, now=RECONCILED + timedelta(minutes=59))
    assert verdict.allowed and verdict.aborted_lists == ["shop"]


def test_an_old_reconciliation_or_a_failed_dbt_run_refuses_the_push(db: duckdb.DuckDBPyConnection) -> None:
    old = push_gate(db, 60, now=RECONCILED + timedelta(minutes=61))
    assert not old.allowed and "61 minutes old, the limit is 60" in old.explain()
    db.execute(
        "insert into ops.dbt_runs values ('i2', 'r2', ?, 90, 1, 'test.mailbridge.not_null_x')",
        [RECONCILED + timedelta(minutes=1)],
    )
    failed = push_gate(db, 60, now=RECONCILED + timedelta(minutes=5))
    assert not failed.allowed and "failed 1 node(s): test.mailbridge.not_null_x" in failed.explain()


def test_nothing_reconciled_refuses(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as empty:
        assert "run `mailbridge sync` first" in push_gate(empty, 60).explain()


def test_a_send_waits_for_pending_opt_outs_and_complete_lists(db: duckdb.DuckDBPyConnection) -> None:
    now = RECONCILED + timedelta(minutes=10)
    assert send_gate(db, "news", 30, now=now).allowed
    db.execute(
        "insert into marts.fct_pushback_queue values "
        "('u1', 'news', 'b@x.de', 'B@x.de', 'unsubscribe', 'conflict', 'ready'), "
        "('t1', 'news', 'a@x.de', 'a@x.de', 'transmit', 'not_in_esp', 'ready')"
    )
    waiting = send_gate(db, "news", 30, now=now)
    assert not waiting.allowed and "1 opt-out or blocklist action(s)" in waiting.explain()
    assert "B@x.de" in waiting.explain()
    db.execute("insert into ops.pushback_outbox values ('u1', 'sent')")
    assert send_gate(db, "news", 30, now=now).allowed
    assert "did not complete" in send_gate(db, "shop", 30, now=now).explain()
    assert "minutes old" in send_gate(db, "news", 30, now=RECONCILED + timedelta(minutes=31)).explain()
