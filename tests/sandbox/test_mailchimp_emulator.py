"""The Mailchimp emulator behaves as ESP_APIS.md describes the real Marketing API v3."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import mailchimp_marketing
import pytest

from pipelines.mailchimp.helpers import subscriber_hash
from tests.conftest import RunningEmulator

KEY = "sandbox0brandmain00000000000000-us1"


@pytest.fixture
def mailchimp(serve_mailchimp: Any, small_scenario: Any) -> RunningEmulator:
    running: RunningEmulator = serve_mailchimp(small_scenario)
    return running


@pytest.fixture
def api(mailchimp: RunningEmulator) -> httpx.Client:
    return httpx.Client(base_url=mailchimp.base_url + "/", auth=("anystring", KEY), timeout=10)


def test_subscriber_hash_matches_the_documented_test_vector() -> None:
    assert subscriber_hash("Urist.McVankab@freddiesjokes.com") == "62eeb292278cc15f5817cb78f7790b08"


def test_official_client_reads_lists_and_members(mailchimp: RunningEmulator) -> None:
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": KEY, "server": "us1"})
    client.api_client.host = mailchimp.base_url
    assert client.ping.get()["health_status"] == "Everything's Chimpy!"
    lists = client.lists.get_all_lists()
    assert [item["id"] for item in lists["lists"]] == ["nl0001"]
    members = client.lists.get_list_members_info("nl0001", count=2, offset=0)
    assert members["total_items"] == 4
    assert len(members["members"]) == 2
    second = client.lists.get_list_members_info("nl0001", count=2, offset=2)
    emails = {m["email_address"] for m in members["members"] + second["members"]}
    assert "anna.schmidt@beispiel.de" in emails and len(emails) == 4
    member = client.lists.get_list_member("nl0001", subscriber_hash("anna.schmidt@beispiel.de"))
    assert member["merge_fields"]["FNAME"] == "Anna"


def test_wrong_key_is_a_401_problem(mailchimp: RunningEmulator) -> None:
    response = httpx.get(f"{mailchimp.base_url}/lists", auth=("x", "wrong-us1"))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "API Key Invalid" and body["status"] == 401 and "instance" in body


def test_bearer_auth_is_accepted(mailchimp: RunningEmulator) -> None:
    response = httpx.get(f"{mailchimp.base_url}/lists", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200


def test_paging_fields_and_since_last_changed(api: httpx.Client) -> None:
    page = api.get("lists/nl0001/members", params={"count": 1000, "fields": "members.email_address,total_items"}).json()
    assert set(page) == {"members", "total_items"}
    assert all(set(member) == {"email_address"} for member in page["members"])
    since = api.get("lists/nl0001/members", params={"since_last_changed": "2025-02-01T10:00:00+00:00"}).json()
    assert {m["email_address"] for m in since["members"]} == {"carla.wolf@beispiel.de", "emil.neu@beispiel.de"}
    assert api.get("lists/nl0001/members", params={"count": 1001}).status_code == 400
    excluded = api.get("lists/nl0001/members", params={"exclude_fields": "members._links,members.stats"}).json()
    assert "stats" not in excluded["members"][0] and "email_address" in excluded["members"][0]


def test_a_census_of_member_ids_answers_as_the_projection_of_the_full_page(api: httpx.Client) -> None:
    full = api.get("lists/nl0001/members", params={"count": 3, "offset": 1}).json()
    census = api.get("lists/nl0001/members", params={"count": 3, "offset": 1, "fields": "members.id,total_items"})
    assert census.json() == {
        "members": [{"id": member["id"]} for member in full["members"]],
        "total_items": full["total_items"],
    }


def test_batch_subscribe_reports_errors_per_member(api: httpx.Client) -> None:
    anna = subscriber_hash("anna.schmidt@beispiel.de")
    assert api.patch(f"lists/nl0001/members/{anna}", json={"status": "unsubscribed"}).status_code == 200
    response = api.post(
        "lists/nl0001",
        json={
            "update_existing": True,
            "members": [
                {"email_address": "neu.person@beispiel.de", "status": "subscribed"},
                {"email_address": "anna.schmidt@beispiel.de", "status": "subscribed"},
                {"email_address": "kein-at-zeichen.de", "status": "subscribed"},
                {"email_address": "carla.wolf@beispiel.de", "status": "unsubscribed"},
            ],
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["total_created"] == 1 and body["total_updated"] == 1 and body["error_count"] == 2
    errors = {error["email_address"]: error["error"] for error in body["errors"]}
    assert "Member In Compliance State" in errors["anna.schmidt@beispiel.de"]
    assert "looks fake or invalid" in errors["kein-at-zeichen.de"]
    # with update_existing the given status overwrites the existing member's
    assert body["updated_members"][0]["email_address"] == "carla.wolf@beispiel.de"
    assert body["updated_members"][0]["status"] == "unsubscribed"


def test_batch_member_without_status_refuses_the_whole_batch(api: httpx.Client) -> None:
    # status_if_new belongs to PUT …/members/{hash}: in a batch member it does not stand in for status
    response = api.post(
        "lists/nl0001",
        json={
            "update_existing": False,
            "members": [
                {"email_address": "neu.person@beispiel.de", "status": "subscribed"},
                {"email_address": "ohne.status@beispiel.de", "status_if_new": "subscribed"},
                {"email_address": "carla.wolf@beispiel.de", "merge_fields": {"FNAME": "Carla-Marie"}},
            ],
        },
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Invalid Resource"
    assert {error["field"] for error in body["errors"]} == {"members[1].status", "members[2].status"}
    members = {m["email_address"]: m for m in api.get("lists/nl0001/members").json()["members"]}
    assert "neu.person@beispiel.de" not in members and len(members) == 4
    assert members["carla.wolf@beispiel.de"]["merge_fields"]["FNAME"] == "Carla"


def test_update_existing_false_leaves_existing_members_untouched_and_reports_them(api: httpx.Client) -> None:
    carla = subscriber_hash("carla.wolf@beispiel.de")
    assert api.delete(f"lists/nl0001/members/{carla}").status_code == 204
    response = api.post(
        "lists/nl0001",
        json={
            "update_existing": False,
            "members": [
                {"email_address": "neu.person@beispiel.de", "status": "subscribed"},
                {"email_address": "anna.schmidt@beispiel.de", "status": "unsubscribed", "merge_fields": {"FNAME": "X"}},
                # archived is still a member: a batch that may not update leaves it archived
                {"email_address": "carla.wolf@beispiel.de", "status": "subscribed"},
            ],
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["total_created"] == 1 and body["total_updated"] == 0 and body["error_count"] == 2
    errors = {error["email_address"]: error for error in body["errors"]}
    assert set(errors) == {"anna.schmidt@beispiel.de", "carla.wolf@beispiel.de"}
    assert all(error["error_code"] == "ERROR_CONTACT_EXISTS" for error in errors.values())
    assert "is already a list member" in errors["anna.schmidt@beispiel.de"]["error"]
    anna = api.get(f"lists/nl0001/members/{subscriber_hash('anna.schmidt@beispiel.de')}").json()
    assert anna["status"] == "subscribed" and anna["merge_fields"]["FNAME"] == "Anna"
    assert api.get(f"lists/nl0001/members/{carla}").json()["status"] == "archived"


def test_batch_over_500_is_refused_whole(api: httpx.Client) -> None:
    members = [{"email_address": f"p{i}@beispiel.de", "status": "subscribed"} for i in range(501)]
    response = api.post("lists/nl0001", json={"members": members})
    assert response.status_code == 400
    assert api.get("lists/nl0001/members").json()["total_items"] == 4


def test_resubscribe_only_through_pending(api: httpx.Client) -> None:
    anna = subscriber_hash("anna.schmidt@beispiel.de")
    api.patch(f"lists/nl0001/members/{anna}", json={"status": "unsubscribed"})
    refused = api.put(
        f"lists/nl0001/members/{anna}", json={"email_address": "anna.schmidt@beispiel.de", "status": "subscribed"}
    )
    assert refused.status_code == 400 and refused.json()["title"] == "Member In Compliance State"
    doi = api.put(
        f"lists/nl0001/members/{anna}", json={"email_address": "anna.schmidt@beispiel.de", "status": "pending"}
    )
    assert doi.status_code == 200 and doi.json()["status"] == "pending"
    # status_if_new never touches an existing member's status
    safe = api.put(
        f"lists/nl0001/members/{anna}",
        json={
            "email_address": "anna.schmidt@beispiel.de",
            "status_if_new": "subscribed",
            "merge_fields": {"LNAME": "S"},
        },
    )
    assert safe.status_code == 200 and safe.json()["status"] == "pending"


def test_archive_versus_permanent_delete(api: httpx.Client) -> None:
    carla = subscriber_hash("carla.wolf@beispiel.de")
    emil = subscriber_hash("emil.neu@beispiel.de")
    assert api.delete(f"lists/nl0001/members/{carla}").status_code == 204
    assert api.get(f"lists/nl0001/members/{carla}").json()["status"] == "archived"
    back = api.put(
        f"lists/nl0001/members/{carla}", json={"email_address": "carla.wolf@beispiel.de", "status": "subscribed"}
    )
    assert back.status_code == 200 and back.json()["status"] == "subscribed"
    assert api.post(f"lists/nl0001/members/{emil}/actions/delete-permanent").status_code == 204
    assert api.get(f"lists/nl0001/members/{emil}").status_code == 404
    forgotten = api.put(
        f"lists/nl0001/members/{emil}", json={"email_address": "emil.neu@beispiel.de", "status": "subscribed"}
    )
    assert forgotten.status_code == 400 and forgotten.json()["title"] == "Forgotten Email Not Subscribed"
    pending = api.put(
        f"lists/nl0001/members/{emil}", json={"email_address": "emil.neu@beispiel.de", "status": "pending"}
    )
    assert pending.status_code == 200


def test_archived_member_stays_archived_without_an_explicit_status(api: httpx.Client) -> None:
    carla = subscriber_hash("carla.wolf@beispiel.de")
    assert api.delete(f"lists/nl0001/members/{carla}").status_code == 204
    kept = api.put(
        f"lists/nl0001/members/{carla}",
        json={"email_address": "carla.wolf@beispiel.de", "status_if_new": "subscribed", "merge_fields": {"LNAME": "W"}},
    )
    assert kept.status_code == 200 and kept.json()["status"] == "archived"
    back = api.put(
        f"lists/nl0001/members/{carla}", json={"email_address": "carla.wolf@beispiel.de", "status": "pending"}
    )
    assert back.status_code == 200 and back.json()["status"] == "pending"


def test_archived_opt_out_comes_back_only_through_pending(api: httpx.Client) -> None:
    anna = subscriber_hash("anna.schmidt@beispiel.de")
    assert api.patch(f"lists/nl0001/members/{anna}", json={"status": "unsubscribed"}).status_code == 200
    assert api.delete(f"lists/nl0001/members/{anna}").status_code == 204
    refused = api.put(
        f"lists/nl0001/members/{anna}", json={"email_address": "anna.schmidt@beispiel.de", "status": "subscribed"}
    )
    assert refused.status_code == 400 and refused.json()["title"] == "Member In Compliance State"
    assert api.get(f"lists/nl0001/members/{anna}").json()["status"] == "archived"
    doi = api.put(
        f"lists/nl0001/members/{anna}", json={"email_address": "anna.schmidt@beispiel.de", "status": "pending"}
    )
    assert doi.status_code == 200 and doi.json()["status"] == "pending"


def test_campaign_reports_and_per_recipient_activity(api: httpx.Client) -> None:
    campaigns = api.get("campaigns").json()
    assert campaigns["total_items"] == 1 and campaigns["campaigns"][0]["status"] == "sent"
    report = api.get("reports/cmp001").json()
    assert report["emails_sent"] == 2 and report["bounces"]["soft_bounces"] == 1
    assert report["opens"]["unique_opens"] == 1 and report["opens"]["open_rate"] == 1.0
    activity = api.get("reports/cmp001/email-activity").json()["emails"]
    anna = next(item for item in activity if item["email_address"] == "anna.schmidt@beispiel.de")
    assert [a["action"] for a in anna["activity"]] == ["open", "click"]
    sent_to = api.get("reports/cmp001/sent-to").json()["sent_to"]
    assert {row["status"] for row in sent_to} == {"sent", "soft"}
    assert api.get("reports/cmp001/unsubscribed").json()["total_items"] == 0


def test_more_than_ten_simultaneous_connections_get_429(mailchimp: RunningEmulator) -> None:
    # every answer takes 3 s, and the 14 requests leave together: on a loaded machine, a first
    # answer that came before the last request had connected let an eleventh one through
    mailchimp.emulator.faults.configure(type(mailchimp.emulator.faults.settings)(rate_slow=1.0, slow_seconds=3.0))
    statuses: list[int] = []
    lock = threading.Lock()
    together = threading.Barrier(14)

    def call() -> None:
        together.wait(timeout=30)
        response = httpx.get(f"{mailchimp.base_url}/lists", auth=("x", KEY), timeout=10)
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(200) == 10
    assert statuses.count(429) == 4


def test_fault_injection_is_seeded_and_logged(mailchimp: RunningEmulator) -> None:
    from sandbox.faults import FaultSettings

    def run() -> list[int]:
        mailchimp.emulator.faults.configure(FaultSettings(seed=7, rate_429=0.2, rate_5xx=0.2, rate_truncated=0.1))
        codes = []
        for _ in range(40):
            response = httpx.get(f"{mailchimp.base_url}/lists", auth=("x", KEY))
            codes.append(response.status_code)
        return codes

    first, second = run(), run()
    assert first == second
    assert {429, 503} <= set(first)
    injected = httpx.get(f"{mailchimp.server.url}/_sandbox/faults").json()["injected"]
    assert injected["429"] > 0 and injected["5xx"] > 0
    log = httpx.get(f"{mailchimp.server.url}/_sandbox/requests").json()["requests"]
    assert len(log) >= 80 and any(entry["fault"] == "truncated" for entry in log)


def test_a_new_member_at_a_moved_members_former_address_is_another_contact(api: httpx.Client) -> None:
    # the member keeps its contact_id when its address changes; whoever subscribes at the
    # former address later is another contact, with an id of its own
    anna = subscriber_hash("anna.schmidt@beispiel.de")
    before = api.get(f"lists/nl0001/members/{anna}").json()
    moved = api.patch(f"lists/nl0001/members/{anna}", json={"email_address": "anna@neu.de"})
    assert moved.status_code == 200 and moved.json()["contact_id"] == before["contact_id"]
    again = api.post("lists/nl0001/members", json={"email_address": "anna.schmidt@beispiel.de", "status": "pending"})
    assert again.status_code == 200
    assert again.json()["contact_id"] not in (before["contact_id"], "")


def test_fault_rules_target_one_kind_of_request_and_replay_alike_under_concurrency(
    serve_mailchimp: Any,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sandbox.faults import FaultRule, FaultSettings
    from sandbox.generator import generate_scenario

    running: RunningEmulator = serve_mailchimp(generate_scenario(contacts=300, seed=2))
    rules = [FaultRule(method="GET", path_regex=r"/3\.0/lists/[^/]+/members", rate_5xx=0.3, rate_429=0.2)]

    def statuses() -> dict[int, int]:
        running.emulator.faults.configure(FaultSettings(seed=3, rules=rules))
        with (
            httpx.Client(base_url=running.base_url + "/", auth=("x", KEY), timeout=10) as client,
            ThreadPoolExecutor(max_workers=8) as pool,
        ):
            answers = pool.map(
                lambda offset: client.get("lists/nl0001/members", params={"count": 5, "offset": offset}),
                range(0, 200, 5),
            )
            answered = {
                offset: response.status_code for offset, response in zip(range(0, 200, 5), answers, strict=True)
            }
        # requests of another kind meet no fault
        assert httpx.get(f"{running.base_url}/lists", auth=("x", KEY)).status_code == 200
        return answered

    first, second = statuses(), statuses()
    assert first == second
    assert {200, 429} <= set(first.values()) and set(first.values()) & {500, 502, 503, 504}


def test_every_fault_kind_as_a_client_meets_it(mailchimp: RunningEmulator) -> None:
    from sandbox.faults import FaultSettings

    def only(kind: str, **settings: Any) -> httpx.Client:
        mailchimp.emulator.faults.configure(FaultSettings(**{f"rate_{kind}": 1.0, "hang_seconds": 0.6, **settings}))
        return httpx.Client(base_url=mailchimp.base_url + "/", auth=("x", KEY), timeout=0.3)

    assert only("429").get("lists").status_code == 429
    limited = only("429").get("lists")
    assert limited.status_code == 429 and "Retry-After" not in limited.headers
    waited = only("429_retry_after", retry_after_seconds=2).get("lists")
    assert waited.status_code == 429 and waited.headers["Retry-After"] == "2"
    down = {only("5xx", seed=seed).get("lists").status_code for seed in range(12)}
    assert down <= {500, 502, 503, 504} and len(down) > 1
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        only("reset").get("lists")
    with pytest.raises(httpx.ReadTimeout):
        only("timeout").get("lists")
    truncated = only("truncated").get("lists")
    assert truncated.status_code == 200
    with pytest.raises(ValueError):
        truncated.json()
    malformed = only("malformed").get("lists")
    plain = httpx.get(f"{mailchimp.base_url}/lists", auth=("x", KEY))
    assert malformed.status_code == 200 and len(malformed.content) == len(plain.content)
    with pytest.raises(ValueError):
        malformed.json()
    # a write that meets "applied, then timed out" takes effect, and its client never hears so
    carla = subscriber_hash("carla.wolf@beispiel.de")
    with pytest.raises(httpx.ReadTimeout):
        only("applied_timeout").patch(f"lists/nl0001/members/{carla}", json={"merge_fields": {"FNAME": "Carlotta"}})
    assert (
        mailchimp.state.account_named("brand_main").lists["nl0001"].members[carla].merge_fields["FNAME"] == "Carlotta"
    )
    # reads never meet it, and only member pages past the first can drift
    assert only("applied_timeout").get("lists").status_code == 200
    assert only("offset_drift").get("lists/nl0001/members", params={"count": 2}).status_code == 200
    injected = httpx.get(f"{mailchimp.server.url}/_sandbox/faults").json()["injected"]
    assert "applied_timeout" not in injected and "offset_drift" not in injected


def test_offset_drift_inserts_or_removes_members_ahead_of_the_page(serve_mailchimp: Any) -> None:
    from sandbox.faults import FaultRule, FaultSettings
    from sandbox.generator import generate_scenario

    running: RunningEmulator = serve_mailchimp(generate_scenario(contacts=300, seed=2))
    members = running.state.account_named("brand_main").lists["nl0001"].members
    api = httpx.Client(base_url=running.base_url + "/", auth=("x", KEY), timeout=10)
    seen_changes = set()
    for seed in range(6):
        running.emulator.faults.configure(
            FaultSettings(
                seed=seed, drift_members=3, rules=[FaultRule(path_contains="/members", rate_offset_drift=1.0)]
            )
        )
        before = list(members)
        page = api.get("lists/nl0001/members", params={"count": 10, "offset": 20}).json()
        after = list(members)
        inserted, removed = set(after) - set(before), set(before) - set(after)
        assert len(inserted) + len(removed) == 3 and not (inserted and removed)
        if inserted:
            assert after[:3] == [m for m in after if m in inserted]  # ahead of every other member
            assert page["members"][0]["id"] == after[20]
        else:
            assert all(before.index(m) < 20 for m in removed)
        assert page["total_items"] == len(after)
        seen_changes.add("inserted" if inserted else "removed")
    assert seen_changes == {"inserted", "removed"}


def test_a_fault_rule_with_a_limit_goes_quiet_after_it(mailchimp: RunningEmulator) -> None:
    from sandbox.faults import FaultRule, FaultSettings

    rule = FaultRule(method="GET", path_contains="/lists", rate_5xx=1.0, limit=2)
    mailchimp.emulator.faults.configure(FaultSettings(rules=[rule]))
    codes = [httpx.get(f"{mailchimp.base_url}/lists", auth=("x", KEY)).status_code for _ in range(5)]
    assert codes[2:] == [200, 200, 200] and all(code >= 500 for code in codes[:2])


def test_answers_are_written_by_orjson_and_the_rest_by_the_standard_library() -> None:
    import json

    from sandbox.mailchimp.app import dumps

    body = {"members": [{"email_address": "jürgen@müller.de", "stats": {"avg_open_rate": 0.5}, "tags": []}]}
    assert json.loads(dumps(body)) == body
    assert "jürgen".encode() in dumps(body)
    huge = {"total_items": 2**70}
    assert json.loads(dumps(huge)) == huge
