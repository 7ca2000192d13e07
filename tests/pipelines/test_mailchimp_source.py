"""The Mailchimp dlt source against the emulator: paging, faults, auth errors, incremental reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from mailbridge.config import MailbridgeConfig, load_config
from pipelines.http import EspAuthError
from pipelines.runner import extraction_named
from sandbox.generator import generate_scenario
from tests.conftest import RunningEmulator, write_project_config

KEY_ENV = "MAILBRIDGE_MAILCHIMP_MAIN_KEY"
KEY = "sandbox0brandmain00000000000000-us1"
FAST_RETRIES = {"page_size": 100, "max_retries": 12, "backoff_seconds": 0.01, "max_retry_after_seconds": 0.1}


def mailchimp_config(tmp_path: Path, emulator: RunningEmulator, **extraction: Any) -> MailbridgeConfig:
    path = write_project_config(
        tmp_path,
        base_url=emulator.base_url,
        crm_url=f"sqlite:///{tmp_path / 'crm.sqlite'}",
        accounts=["brand_main"],
        overrides={"extraction": {**FAST_RETRIES, **extraction}},
    )
    return load_config(path)


def extract(config: MailbridgeConfig, *, full_refresh: bool, run_id: str) -> None:
    run = extraction_named(config, "mailchimp", full_refresh=full_refresh, run_id=run_id)
    run.pipeline.run(run.source)


def warehouse(config: MailbridgeConfig) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(config.warehouse_path()), read_only=True)


@pytest.fixture(scope="module")
def scenario() -> Any:
    return generate_scenario(contacts=1500, seed=3)


def test_every_member_loaded_exactly_once_despite_faults(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(
        scenario,
        seed=11,
        rate_429=0.08,
        rate_429_retry_after=0.05,
        retry_after_seconds=0.02,
        rate_5xx=0.08,
        rate_slow=0.05,
        slow_seconds=0.05,
        rate_truncated=0.05,
    )
    config = mailchimp_config(tmp_path, emulator)
    extract(config, full_refresh=True, run_id="faulty")

    account = emulator.state.account_named("brand_main")
    with warehouse(config) as db:
        for list_id, mailchimp_list in account.lists.items():
            rows, distinct = db.execute(
                "select count(*), count(distinct id) from raw_mailchimp.members where list_id = ?", [list_id]
            ).fetchone()
            assert rows == distinct == len(mailchimp_list.members)
            loaded = {
                r[0] for r in db.execute("select id from raw_mailchimp.members where list_id = ?", [list_id]).fetchall()
            }
            assert loaded == set(mailchimp_list.members)
        completed = db.execute("select bool_and(completed) from raw_mailchimp.list_extractions").fetchone()[0]
        assert completed is True
        sent = db.execute("select count(*) from raw_mailchimp.sent_to").fetchone()[0]
        assert sent == sum(len(c.recipients) for c in account.campaigns.values())
    injected = emulator.emulator.faults.as_json()["injected"]
    assert injected.get("429", 0) and injected.get("5xx", 0) and injected.get("truncated", 0)
    assert max(emulator.emulator.peak_in_flight.values()) <= 10
    assert not any(entry.fault == "connection_limit" for entry in emulator.emulator.log.snapshot())


def test_wrong_api_key_names_the_account_and_hides_the_key(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "0123456789abcdef0123456789abcdef-us1"
    monkeypatch.setenv(KEY_ENV, wrong)
    emulator: RunningEmulator = serve_mailchimp(small_scenario)
    config = mailchimp_config(tmp_path, emulator)
    with pytest.raises(PipelineStepFailed) as caught:
        extract(config, full_refresh=True, run_id="wrong-key")
    cause: BaseException | None = caught.value
    while cause is not None and not isinstance(cause, EspAuthError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, EspAuthError)
    message = str(cause)
    assert "brand_main" in message and KEY_ENV in message and "401" in message
    assert wrong not in message and wrong not in str(caught.value)


def test_missing_key_variable_says_which_to_set(
    tmp_path: Path, serve_mailchimp: Any, small_scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    emulator: RunningEmulator = serve_mailchimp(small_scenario)
    config = mailchimp_config(tmp_path, emulator)
    with pytest.raises(PipelineStepFailed, match=rf"brand_main.*{KEY_ENV} is not set"):
        extract(config, full_refresh=True, run_id="no-key")


def test_incremental_sync_fetches_only_changed_members(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config = mailchimp_config(tmp_path, emulator)
    extract(config, full_refresh=True, run_id="full")
    newsletter = emulator.state.account_named("brand_main").lists["nl0001"]
    before_total = len(newsletter.members)
    newest_before = max(member.last_changed for member in newsletter.members.values())
    subscribed = [m for m in newsletter.members.values() if m.status == "subscribed"][:5]
    api = httpx.Client(base_url=emulator.base_url + "/", auth=("x", KEY))
    for member in subscribed:
        assert api.patch(f"lists/nl0001/members/{member.id}", json={"status": "unsubscribed"}).status_code == 200
    emulator.emulator.log.clear()

    extract(config, full_refresh=False, run_id="incremental")

    member_reads = [entry for entry in emulator.emulator.log.snapshot() if entry.path == "/3.0/lists/nl0001/members"]
    assert member_reads and all("since_last_changed" in entry.query for entry in member_reads)
    fetched = sum(entry.items or 0 for entry in member_reads)
    # the cursor is inclusive: members changed exactly at the old cursor come again, and merge
    at_cursor = sum(1 for m in newsletter.members.values() if m.last_changed == newest_before)
    assert fetched == 5 + at_cursor
    with warehouse(config) as db:
        total = db.execute("select count(*) from raw_mailchimp.members where list_id = 'nl0001'").fetchone()[0]
        assert total == before_total
        statuses = dict(
            db.execute(
                "select id, status from raw_mailchimp.members where id in ({})".format(",".join("?" * 5)),
                [m.id for m in subscribed],
            ).fetchall()
        )
    assert statuses == {m.id: "unsubscribed" for m in subscribed}
