"""The Mailchimp dlt source against the emulator: paging, faults, auth errors, incremental reads."""

from __future__ import annotations

import re
import time
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
        rate_malformed=0.04,
        rate_reset=0.04,
        rate_timeout=0.02,
        hang_seconds=1.0,
    )
    config = mailchimp_config(tmp_path, emulator, timeout_seconds=0.5)
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
    assert all(injected.get(kind) for kind in ("429", "429_retry_after", "5xx", "truncated", "malformed", "reset"))
    assert injected.get("timeout")
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

    requests = [entry for entry in emulator.emulator.log.snapshot() if entry.path == "/3.0/lists/nl0001/members"]
    # besides the changed members, one count of the list: nothing is gone, so no census
    member_reads = [entry for entry in requests if entry.query.get("fields") != "total_items"]
    assert len(requests) - len(member_reads) == 1
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


def failing_reads(*paths: str) -> dict[str, Any]:
    """Fault settings under which every GET of these paths (regexes) answers a 5xx."""
    return {"rules": [{"method": "GET", "path_regex": path, "rate_5xx": 1.0} for path in paths]}


def test_a_failed_report_read_fails_alone_and_is_read_again_next_run(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read of one campaign's reports, and the sent-to of another, fail past their
    retries: the members, lists and the other campaigns still load, each failed read is
    recorded with its resource, campaign and error, and the next run reads them."""
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(
        scenario, **failing_reads(r"/3\.0/reports/pn0001c01(/.*)?", r"/3\.0/reports/nl0001c02/sent-to")
    )
    config = mailchimp_config(tmp_path, emulator, max_retries=1)
    account = emulator.state.account_named("brand_main")

    extract(config, full_refresh=True, run_id="faulty")

    with warehouse(config) as db:
        members = db.execute("select count(*) from raw_mailchimp.members").fetchone()[0]
        assert members == sum(len(item.members) for item in account.lists.values())
        assert db.execute("select bool_and(completed) from raw_mailchimp.list_extractions").fetchone()[0] is True
        reports = {r[0] for r in db.execute("select campaign_id from raw_mailchimp.reports").fetchall()}
        sent_to = {r[0] for r in db.execute("select distinct campaign_id from raw_mailchimp.sent_to").fetchall()}
        failed = db.execute(
            "select resource, campaign_id, run_id, error from raw_mailchimp.resource_extractions "
            "where not completed order by all"
        ).fetchall()
        completed = db.execute(
            "select count(*) from raw_mailchimp.resource_extractions where completed and campaign_id = 'nl0001c01'"
        ).fetchone()[0]
    assert reports == set(account.campaigns) - {"pn0001c01"}
    assert sent_to == set(account.campaigns) - {"pn0001c01", "nl0001c02"}
    assert [(resource, campaign) for resource, campaign, _, _ in failed] == [
        ("abuse_reports", "pn0001c01"),
        ("email_activity", "pn0001c01"),
        ("reports", "pn0001c01"),
        ("sent_to", "nl0001c02"),
        ("sent_to", "pn0001c01"),
        ("unsubscribes", "pn0001c01"),
    ]
    assert all(
        run == "faulty" and re.search(r"HTTP 50\d", error) and "brand_main" in error for _, _, run, error in failed
    )
    assert all(KEY not in error for _, _, _, error in failed)
    assert completed == 5  # every resource of a campaign that read well says so too

    emulator.emulator.faults.configure(type(emulator.emulator.faults.settings)())
    emulator.emulator.log.clear()
    extract(config, full_refresh=False, run_id="healed")

    activity_reads = {
        entry.path.split("/")[3]: entry.query
        for entry in emulator.emulator.log.snapshot()
        if entry.path.endswith("/email-activity")
    }
    # a campaign whose activity never read completely is read from the start again; one read
    # completely, whose report counts nothing new, is not read
    assert "since" not in activity_reads["pn0001c01"] and "nl0001c01" not in activity_reads
    with warehouse(config) as db:
        reports = {r[0] for r in db.execute("select campaign_id from raw_mailchimp.reports").fetchall()}
        sent = db.execute("select count(*) from raw_mailchimp.sent_to").fetchone()[0]
        still_failed = db.execute(
            "select count(*) from raw_mailchimp.resource_extractions where not completed"
        ).fetchone()[0]
    assert reports == set(account.campaigns)
    assert sent == sum(len(c.recipients) for c in account.campaigns.values())
    assert still_failed == 0


def test_a_failed_activity_read_keeps_its_cursor(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    # every run reads the activity, new by the report or not
    config = mailchimp_config(tmp_path, emulator, max_retries=1, activity_recheck_hours=0)
    faults = emulator.emulator.faults

    def since_asked(run_id: str) -> str:
        emulator.emulator.log.clear()
        extract(config, full_refresh=False, run_id=run_id)
        asked = {
            entry.query.get("since", "")
            for entry in emulator.emulator.log.snapshot()
            if entry.path == "/3.0/reports/nl0001c01/email-activity" and entry.status == 200
        }
        assert len(asked) <= 1  # every page of one read asks from the same cursor
        return asked.pop() if asked else ""

    since_asked("first")
    faults.configure(type(faults.settings)(**failing_reads(r"/3\.0/reports/nl0001c01/email-activity")))
    since_asked("failed")
    faults.configure(type(faults.settings)())
    cursor_before = since_asked("second")
    # the failed run did not move the cursor: the run after it asks from where the first ended
    assert cursor_before and cursor_before < since_asked("third")
    with warehouse(config) as db:
        rows = db.execute(
            "select run_id, completed from raw_mailchimp.resource_extractions "
            "where resource = 'email_activity' and campaign_id = 'nl0001c01'"
        ).fetchall()
    assert rows == [("third", True)]


def list_members_loaded(config: MailbridgeConfig, list_id: str) -> int:
    with warehouse(config) as db:
        count: int = db.execute("select count(*) from raw_mailchimp.members where list_id = ?", [list_id]).fetchone()[0]
    return count


def test_a_list_whose_full_read_broke_off_is_read_whole_next_time(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full sync replaces the members table: a list whose read broke off is left with part
    of its members. Read only since its old cursor, the rest would look gone at the ESP."""
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    # every run reads the activity, new by the report or not
    config = mailchimp_config(tmp_path, emulator, max_retries=1, activity_recheck_hours=0)
    faults = emulator.emulator.faults
    product_news = emulator.state.account_named("brand_main").lists["pn0001"]
    extract(config, full_refresh=True, run_id="first")
    assert list_members_loaded(config, "pn0001") == len(product_news.members)

    faults.configure(type(faults.settings)(**failing_reads(r"/3\.0/lists/pn0001/members")))
    extract(config, full_refresh=True, run_id="broken")
    assert list_members_loaded(config, "pn0001") < len(product_news.members)

    faults.configure(type(faults.settings)())
    emulator.emulator.log.clear()
    extract(config, full_refresh=False, run_id="next")
    reads = [entry.query for entry in emulator.emulator.log.snapshot() if entry.path == "/3.0/lists/pn0001/members"]
    assert reads and not any("since_last_changed" in query for query in reads)
    assert list_members_loaded(config, "pn0001") == len(product_news.members)
    with warehouse(config) as db:
        latest = db.execute(
            "select run_id, completed from raw_mailchimp.list_extractions where list_id = 'pn0001' "
            "order by started_at desc limit 1"
        ).fetchone()
    assert latest == ("next", True)


@pytest.mark.parametrize("full_refresh", [False, True], ids=["incremental", "full"])
def test_an_unreadable_list_index_marks_every_known_list_unread(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch, full_refresh: bool
) -> None:
    """Without the index no member is read: every list read before is recorded unread (and
    reconciles as aborted), never left complete with members a full read just replaced away."""
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    # every run reads the activity, new by the report or not
    config = mailchimp_config(tmp_path, emulator, max_retries=1, activity_recheck_hours=0)
    faults = emulator.emulator.faults
    extract(config, full_refresh=True, run_id="first")

    faults.configure(type(faults.settings)(**failing_reads(r"/3\.0/lists")))
    extract(config, full_refresh=full_refresh, run_id="no-index")
    with warehouse(config) as db:
        unread = db.execute(
            "select list_id, completed, error from raw_mailchimp.list_extractions where run_id = 'no-index' order by 1"
        ).fetchall()
        index = db.execute(
            "select completed from raw_mailchimp.resource_extractions where resource = 'lists' and run_id = 'no-index'"
        ).fetchall()
        reports = db.execute("select count(*) from raw_mailchimp.reports").fetchone()[0]
    assert [(list_id, completed) for list_id, completed, _ in unread] == [("nl0001", False), ("pn0001", False)]
    assert all("lists could not be read" in error for _, _, error in unread)
    assert index == [(False,)]
    assert reports == len(emulator.state.account_named("brand_main").campaigns)

    faults.configure(type(faults.settings)())
    extract(config, full_refresh=False, run_id="readable")
    with warehouse(config) as db:
        completed = db.execute(
            "select bool_and(completed), count(*) from raw_mailchimp.list_extractions where run_id = 'readable'"
        ).fetchone()
    assert completed == (True, 2)


def test_an_incremental_read_deletes_the_members_the_esp_no_longer_has(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`since_last_changed` never shows a member that is gone: permanently deleted, or moved to
    another id by an address change. The count of the list tells, and a census of its ids finds
    them: the incremental read leaves the members a full read would."""
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config = mailchimp_config(tmp_path, emulator)
    extract(config, full_refresh=True, run_id="full")
    newsletter = emulator.state.account_named("brand_main").lists["nl0001"]
    erased, moved, archived = list(newsletter.members)[:2], list(newsletter.members)[2:4], list(newsletter.members)[4]
    api = httpx.Client(base_url=emulator.base_url + "/", auth=("x", KEY))
    for member_id in erased:
        assert api.post(f"lists/nl0001/members/{member_id}/actions/delete-permanent").status_code == 204
    for index, member_id in enumerate(moved):
        answer = api.patch(
            f"lists/nl0001/members/{member_id}", json={"email_address": f"umgezogen.{index}@beispiel.de"}
        )
        assert answer.status_code == 200, answer.text
    assert api.delete(f"lists/nl0001/members/{archived}").status_code == 204
    emulator.emulator.log.clear()

    extract(config, full_refresh=False, run_id="incremental")

    census = [
        entry
        for entry in emulator.emulator.log.snapshot()
        if entry.path == "/3.0/lists/nl0001/members" and entry.query.get("fields") == "members.id,total_items"
    ]
    assert census, "the list's ids were not read"
    with warehouse(config) as db:
        stored = {
            r[0]: r[1]
            for r in db.execute("select id, status from raw_mailchimp.members where list_id = 'nl0001'").fetchall()
        }
        other_lists = db.execute("select count(*) from raw_mailchimp.members where list_id <> 'nl0001'").fetchone()[0]
    assert set(stored) == set(newsletter.members)
    assert not set(stored) & set(erased + moved)
    assert stored[archived] == "archived"
    assert other_lists == sum(
        len(item.members) for key, item in emulator.state.account_named("brand_main").lists.items() if key != "nl0001"
    )


@pytest.mark.parametrize("full_refresh", [True, False], ids=["full", "incremental"])
def test_offset_drift_loses_and_repeats_no_member(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch, full_refresh: bool
) -> None:
    """Members inserted and erased ahead of the page being read shift every later offset: a
    member present all along is still read once, and the read completes."""
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config = mailchimp_config(tmp_path, emulator)
    lists = emulator.state.account_named("brand_main").lists
    changed: set[str] = set()
    if not full_refresh:
        extract(config, full_refresh=True, run_id="first")
        api = httpx.Client(base_url=emulator.base_url + "/", auth=("x", KEY))
        for member in list(lists["nl0001"].members.values())[::2]:  # half of the list changes
            api.patch(f"lists/nl0001/members/{member.id}", json={"merge_fields": {"LNAME": "Neu"}})
            changed.add(member.id)
    emulator.emulator.faults.configure(
        type(emulator.emulator.faults.settings)(
            seed=5, drift_members=3, rules=[{"method": "GET", "path_contains": "/members", "rate_offset_drift": 0.5}]
        )
    )
    before = {list_id: set(item.members) for list_id, item in lists.items()}
    extract(config, full_refresh=full_refresh, run_id="drifting")
    assert emulator.emulator.faults.as_json()["injected"]["offset_drift"] >= 2
    with warehouse(config) as db:
        for list_id, item in lists.items():
            loaded = [
                r[0] for r in db.execute("select id from raw_mailchimp.members where list_id = ?", [list_id]).fetchall()
            ]
            assert len(loaded) == len(set(loaded))
            present_throughout = before[list_id] & set(item.members)
            assert present_throughout - set(loaded) == set(), f"{list_id}: members present all along were not read"
        # an incremental read that skipped a changed member leaves its old version in place
        renamed = {r[0] for r in db.execute("select id from raw_mailchimp.members where last_name = 'Neu'").fetchall()}
        assert (changed & set(lists["nl0001"].members)) - renamed == set()
        completed = db.execute(
            "select bool_and(completed) from raw_mailchimp.list_extractions where run_id = 'drifting'"
        ).fetchone()[0]
    assert completed is True


def test_a_list_that_keeps_drifting_is_aborted_not_read_short(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    """Pages overlap by a tenth: a smaller drift is read through; one that moves members by
    more than that between every two page reads cannot be, and the list is not taken as read."""
    rules = [{"method": "GET", "path_contains": "/lists/pn0001/members", "rate_offset_drift": 1.0}]
    emulator: RunningEmulator = serve_mailchimp(scenario, rules=rules, drift_members=20)
    config = mailchimp_config(tmp_path, emulator)
    # one page in flight: every page drifts after the one before was served (pages read side
    # by side can be served after several drifts at once, and follow each other after all)
    config = config.model_copy(
        update={"esp_accounts": [a.model_copy(update={"max_connections": 1}) for a in config.esp_accounts]}
    )
    extract(config, full_refresh=True, run_id="drifting")
    with warehouse(config) as db:
        outcomes = dict(
            db.execute("select list_id, coalesce(error, '') from raw_mailchimp.list_extractions").fetchall()
        )
        completed = dict(db.execute("select list_id, completed from raw_mailchimp.list_extractions").fetchall())
    assert completed == {"nl0001": True, "pn0001": False}
    assert "kept changing while it was read" in outcomes["pn0001"]


class ScriptedClient:
    """Answers GETs of one path from a list of pages, by offset."""

    account_label = "Mailchimp account 'brand_main'"

    def __init__(self, answers: dict[int, Any]) -> None:
        self.answers = answers

    def get(self, path: str, params: dict[str, Any]) -> Any:
        return self.answers[params["offset"]]


def test_a_page_without_its_collection_fails_the_read_instead_of_ending_it() -> None:
    from pipelines.http import EspApiError
    from pipelines.mailchimp.helpers import paged

    members = [{"id": f"m{i}"} for i in range(10)]
    client = ScriptedClient({0: {"members": members[:5], "total_items": 10}, 4: {"total_items": 10}})
    with pytest.raises(EspApiError, match="offset 4 answered without a 'members' list"):
        list(paged(client, "lists/x/members", "members", page_size=5))  # type: ignore[arg-type]
    client = ScriptedClient({0: {"members": members[:5]}})
    with pytest.raises(EspApiError, match="offset 0 answered without"):
        list(paged(client, "lists/x/members", "members", page_size=5))  # type: ignore[arg-type]
    client = ScriptedClient(
        {
            0: {"members": members[:5], "total_items": 10},
            4: {"members": members[4:9], "total_items": 10},
            8: {"members": members[8:], "total_items": 10},
        }
    )
    assert [m["id"] for page in paged(client, "lists/x/members", "members", page_size=5) for m in page] == [  # type: ignore[arg-type]
        m["id"] for m in members
    ]


def test_paging_reads_ahead_a_bounded_window_of_pages() -> None:
    """Every page was submitted at once: at a million members, gigabytes of pages waited for a
    consumer that had read only the first. Pages in flight or read ahead are now bounded."""
    from pipelines.mailchimp.helpers import paged

    members = [{"id": f"m{i}"} for i in range(2000)]
    page_size, stride = 10, 9  # pages overlap by one item
    answers = {
        offset: {"members": members[offset : offset + page_size], "total_items": len(members)}
        for offset in range(0, len(members), stride)
    }

    class CountingClient(ScriptedClient):
        requested = 0

        def get(self, path: str, params: dict[str, Any]) -> Any:
            CountingClient.requested += 1
            return super().get(path, params)

    client = CountingClient(answers)
    pages = paged(client, "lists/x/members", "members", page_size=page_size, concurrency=4)  # type: ignore[arg-type]
    read = [m["id"] for _ in range(3) for m in next(pages)]
    time.sleep(0.3)  # let the workers run ahead as far as they may
    assert CountingClient.requested <= 3 + 2 * 4
    read += [m["id"] for page in pages for m in page]
    assert read == [m["id"] for m in members]
    assert CountingClient.requested == len(answers)


def test_a_timestamp_column_reads_as_each_value_is_read() -> None:
    """Arrow parses a page's timestamps at once; a value it cannot read alone (no offset, a date)
    makes the column read value by value, as before, with the same times."""
    from pipelines.mailchimp.helpers import parse_timestamp, timestamp_column

    columns = [
        ["2025-01-01T10:00:00+00:00", "", None, "2025-06-01T12:30:00.25+02:00", "2025-03-01T00:00:00Z"],
        ["2025-01-01T10:00:00", "2025-01-01T10:00:00+00:00", ""],
        ["2025-01-01", "2025-01-01T10:00:00-05:00"],
    ]
    for values in columns:
        assert timestamp_column(values).to_pylist() == [parse_timestamp(value) for value in values]
    with pytest.raises(ValueError):
        timestamp_column(["yesterday"])


def test_a_rows_table_holds_each_row_as_the_row_by_row_build_did() -> None:
    """Report rows become Arrow column by column: the same values as a row-by-row build with
    each timestamp parsed alone, missing keys null, and the rows left as they came."""
    import pyarrow as pa

    from pipelines.mailchimp.helpers import TS, parse_timestamp, rows_table

    schema = pa.schema([("email_address", pa.string()), ("timestamp", TS), ("count", pa.int64())])
    rows = [
        {"email_address": "a@x.de", "timestamp": "2025-01-01T10:00:00+00:00", "count": 2},
        {"email_address": "b@x.de", "timestamp": ""},
        {"email_address": "c@x.de", "timestamp": "2025-06-01T12:30:00+02:00", "count": None, "extra": "x"},
    ]
    before = [dict(row) for row in rows]
    expected = pa.Table.from_pylist(
        [{**row, "timestamp": parse_timestamp(row.get("timestamp"))} for row in rows], schema=schema
    )
    assert rows_table(rows, schema, ["timestamp"]).equals(expected)
    assert rows == before
    assert rows_table([], schema, ["timestamp"]).num_rows == 0


def test_report_pages_become_the_tables_a_row_by_row_build_made() -> None:
    """A page of email activity and a page of sent-to become Arrow column by column: the same
    table as one dict per event (or recipient) turned into rows, for recipients without activity,
    missing keys, empty IPs and URLs, bounces, and keys the schema does not name."""
    from pipelines.mailchimp import ACTIVITY_SCHEMA, SENT_TO_SCHEMA, activity_page_table
    from pipelines.mailchimp.helpers import rows_table

    page: list[dict[str, Any]] = [
        {
            "list_id": "l1",
            "email_id": "e1",
            "email_address": "A@x.de",
            "status": "sent",
            "open_count": 2,
            "last_open": "2025-01-02T10:00:00+00:00",
            "activity": [
                {"action": "open", "timestamp": "2025-01-01T10:00:00+00:00", "ip": "1.2.3.4"},
                {"action": "click", "timestamp": "2025-01-01T10:05:00+00:00", "ip": "", "url": "https://x.de/a"},
            ],
        },
        {"list_id": "l1", "email_id": "e2", "email_address": "b@x.de", "activity": []},
        {"email_id": "e3", "email_address": None, "status": "hard", "last_open": ""},
        {
            "list_id": "l1",
            "email_id": "e4",
            "email_address": "d@x.de",
            "extra": "kept out",
            "activity": [{"action": "bounce", "timestamp": "2025-01-03T00:00:00Z", "type": "hard", "url": None}],
        },
    ]
    events = [
        {
            "esp_account": "acc",
            "campaign_id": "c1",
            "list_id": email.get("list_id"),
            "email_id": email.get("email_id"),
            "email_address": email.get("email_address"),
            "action": event.get("action"),
            "timestamp": event.get("timestamp"),
            "ip": event.get("ip") or None,
            "url": event.get("url") or "",
            "bounce_type": event.get("type") or None,
        }
        for email in page
        for event in email.get("activity") or []
    ]
    assert activity_page_table("acc", "c1", page).equals(rows_table(events, ACTIVITY_SCHEMA, ["timestamp"]))
    assert activity_page_table("acc", "c1", page[1:3]).num_rows == 0

    fields = ("list_id", "email_id", "email_address", "status", "open_count", "last_open")
    recipients = [
        {"esp_account": "acc", "campaign_id": "c1", **{field: item.get(field) for field in fields}} for item in page
    ]
    constants = {"esp_account": "acc", "campaign_id": "c1"}
    built = rows_table(page, SENT_TO_SCHEMA, ["last_open"], constants=constants)
    assert built.equals(rows_table(recipients, SENT_TO_SCHEMA, ["last_open"]))


def test_per_recipient_reports_of_a_campaign_past_its_window_are_read_once_more_then_settled(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent-to and unsubscribes are read on every run while a campaign is in its window after the
    send; a complete read after it settles the campaign: incremental runs skip it, a full sync
    reads it again. A read that failed settles nothing."""
    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario, **failing_reads(r"/3\.0/reports/nl0001c02/sent-to"))
    config = mailchimp_config(tmp_path, emulator, max_retries=1, report_window_days=0, sent_to_window_days=0)
    account = emulator.state.account_named("brand_main")
    log = emulator.emulator.log

    def recipient_reads(run_id: str, *, full_refresh: bool) -> set[tuple[str, str]]:
        log.clear()
        extract(config, full_refresh=full_refresh, run_id=run_id)
        return {
            (entry.path.split("/")[3], entry.path.split("/")[4])
            for entry in log.snapshot()
            if entry.path.endswith(("/sent-to", "/unsubscribed"))
        }

    every = {(c, r) for c in account.campaigns for r in ("sent-to", "unsubscribed")}
    assert recipient_reads("first", full_refresh=True) == every
    emulator.emulator.faults.configure(type(emulator.emulator.faults.settings)())
    # only the read that failed is made again
    assert recipient_reads("second", full_refresh=False) == {("nl0001c02", "sent-to")}
    assert recipient_reads("third", full_refresh=False) == set()
    assert recipient_reads("full", full_refresh=True) == every
    with warehouse(config) as db:
        sent = db.execute("select count(*) from raw_mailchimp.sent_to").fetchone()[0]
    assert sent == sum(len(c.recipients) for c in account.campaigns.values())

    # within the window, every run reads them again
    config = mailchimp_config(
        tmp_path, emulator, max_retries=1, report_window_days=100_000, sent_to_window_days=100_000
    )
    assert recipient_reads("within", full_refresh=True) == every
    assert recipient_reads("within again", full_refresh=False) == every
    # sent-to has a window of its own: past it, the unsubscribes alone are read again
    config = mailchimp_config(tmp_path, emulator, max_retries=1, report_window_days=100_000, sent_to_window_days=0)
    assert recipient_reads("sent-to settling", full_refresh=True) == every
    assert recipient_reads("sent-to settled", full_refresh=False) == {
        (campaign, "unsubscribed") for campaign in account.campaigns
    }


def test_email_activity_is_read_again_a_window_back_from_its_cursor_and_kept_once(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events the ESP reports late, dated before the last read, are read by the next one: it
    asks `since` the cursor less the re-read window; the merge keeps every event once (a window
    reaching back past every event reads them all again)."""
    from datetime import UTC, datetime, timedelta

    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    window = timedelta(days=20 * 365)
    config = mailchimp_config(
        tmp_path, emulator, activity_reread_minutes=window.total_seconds() / 60, activity_recheck_hours=0
    )

    def activity() -> tuple[int, int]:
        with warehouse(config) as db:
            rows = db.execute("select count(*) from raw_mailchimp.email_activity").fetchone()[0]
            fetched = db.execute(
                "select sum(rows_fetched) from raw_mailchimp.resource_extractions where resource = 'email_activity'"
            ).fetchone()[0]
        return rows, fetched

    before_first = datetime.now(UTC).replace(microsecond=0)
    extract(config, full_refresh=True, run_id="first")
    after_first = datetime.now(UTC)
    loaded, _ = activity()
    emulator.emulator.log.clear()
    extract(config, full_refresh=False, run_id="second")
    asked = {
        entry.query.get("since")
        for entry in emulator.emulator.log.snapshot()
        if entry.path == "/3.0/reports/nl0001c01/email-activity"
    }
    assert len(asked) == 1
    since = datetime.fromisoformat(str(asked.pop()))
    assert before_first - window <= since <= after_first - window
    rows, fetched = activity()
    assert loaded > 0 and fetched == loaded and rows == loaded


def test_email_activity_of_a_campaign_whose_report_counts_nothing_new_is_not_read_again(
    tmp_path: Path, serve_mailchimp: Any, scenario: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An incremental sync compares each campaign's report (opens, clicks, bounces, the latest
    open and click) with what it counted when the activity was last read completely. A campaign
    with nothing new is not read; one with a new open is, from the cursor of its last read, so
    the skipped runs lose nothing. A failed read, a full sync and `activity_recheck_hours` read
    it again."""
    from datetime import UTC, datetime

    from pipelines.mailchimp.helpers import subscriber_hash
    from sandbox.mailchimp.state import Activity

    monkeypatch.setenv(KEY_ENV, KEY)
    emulator: RunningEmulator = serve_mailchimp(scenario)
    config = mailchimp_config(tmp_path, emulator, max_retries=1)
    account = emulator.state.account_named("brand_main")
    faults = emulator.emulator.faults

    def activity_reads(run_id: str, *, full_refresh: bool = False) -> dict[str, str]:
        emulator.emulator.log.clear()
        extract(config, full_refresh=full_refresh, run_id=run_id)
        return {
            entry.path.split("/")[3]: str(entry.query.get("since", ""))
            for entry in emulator.emulator.log.snapshot()
            if entry.path.endswith("/email-activity") and entry.status == 200
        }

    every = set(account.campaigns)
    assert set(activity_reads("first", full_refresh=True)) == every
    assert activity_reads("nothing new") == {}
    assert activity_reads("nothing new again") == {}

    campaign = account.campaigns["nl0001c01"]
    recipient = next(iter(campaign.recipients.values()))
    opened = datetime.now(UTC).replace(microsecond=0)
    recipient.activity.append(Activity("open", opened))
    reads = activity_reads("a new open")
    assert set(reads) == {"nl0001c01"}
    # asked since the first run's read: the two runs that skipped it did not move the cursor
    first_cursor = datetime.fromisoformat(reads["nl0001c01"])
    assert first_cursor < opened
    with warehouse(config) as db:
        loaded = db.execute(
            "select count(*) from raw_mailchimp.email_activity where campaign_id = 'nl0001c01' and email_id = ? "
            "and action = 'open' and timestamp = ?",
            [subscriber_hash(recipient.email_address), opened],
        ).fetchone()[0]
    assert loaded == 1
    assert activity_reads("nothing new after it") == {}

    # a read that fails is made again by the next run, counters unchanged or not
    recipient.activity.append(Activity("click", datetime.now(UTC).replace(microsecond=0), url="https://x.de/a"))
    faults.configure(type(faults.settings)(**failing_reads(r"/3\.0/reports/nl0001c01/email-activity")))
    assert activity_reads("failed") == {}
    faults.configure(type(faults.settings)())
    assert set(activity_reads("after the failure")) == {"nl0001c01"}
    assert activity_reads("settled again") == {}

    assert set(activity_reads("full", full_refresh=True)) == every
    config = mailchimp_config(tmp_path, emulator, max_retries=1, activity_recheck_hours=0)
    assert set(activity_reads("recheck every run")) == every
