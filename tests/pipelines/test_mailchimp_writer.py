"""The Mailchimp writer against the emulator: batches, partial and whole-batch errors, compliance."""

from __future__ import annotations

from typing import Any

import pytest

from mailbridge.config import EspAccount
from pipelines.http import RetryPolicy
from pipelines.mailchimp.helpers import subscriber_hash
from pipelines.mailchimp.writer import MailchimpWriter
from pipelines.writers import EspAccountError, EspWrite, WriteOutcome
from sandbox.faults import FaultSettings
from tests.conftest import RunningEmulator

KEY = "sandbox0brandmain00000000000000-us1"
FAST = RetryPolicy(max_retries=12, backoff_seconds=0.01, max_retry_after_seconds=0.05)


@pytest.fixture
def mailchimp(serve_mailchimp: Any, small_scenario: Any) -> RunningEmulator:
    running: RunningEmulator = serve_mailchimp(small_scenario)
    return running


def writer_for(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch, **options: Any) -> MailchimpWriter:
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", KEY)
    account = EspAccount(
        name="brand_main", type="mailchimp", api_key_env="MAILBRIDGE_MAILCHIMP_MAIN_KEY", base_url=emulator.base_url
    )
    return MailchimpWriter(account, retry=FAST, **options)


def batch_posts(emulator: RunningEmulator) -> int:
    return sum(1 for e in emulator.emulator.log.snapshot() if e.method == "POST" and e.path == "/3.0/lists/nl0001")


def recorded_requests(writer: MailchimpWriter, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body) of every request the writer makes, as it hands them to the client."""
    requests: list[tuple[str, str, Any]] = []
    send = writer.client.request_json

    def recording(method: str, path: str, **options: Any) -> Any:
        requests.append((method, path, options.get("json_body")))
        return send(method, path, **options)

    monkeypatch.setattr(writer.client, "request_json", recording)
    return requests


def test_many_transmits_go_in_batches_of_500(mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = [EspWrite(f"a{i}", "transmit", f"neu.{i}@beispiel.de", {"FNAME": f"Neu{i}"}) for i in range(1200)]
    outcomes = writer_for(mailchimp, monkeypatch).write("nl0001", writes)
    assert [o.status for o in outcomes] == ["sent"] * 1200
    assert batch_posts(mailchimp) == 3
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    assert members[subscriber_hash("neu.7@beispiel.de")].status == "subscribed"
    assert members[subscriber_hash("neu.7@beispiel.de")].merge_fields["FNAME"] == "Neu7"


def test_existing_members_never_get_a_subscribed_status(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    members[subscriber_hash("anna.schmidt@beispiel.de")].status = "unsubscribed"
    writer = writer_for(mailchimp, monkeypatch)
    outcomes = writer.write(
        "nl0001",
        [
            EspWrite("t", "transmit", "anna.schmidt@beispiel.de"),
            EspWrite("u", "unsubscribe", "carla.wolf@beispiel.de"),
            EspWrite("f", "update_fields", "niemand@beispiel.de", {"FNAME": "X"}),
        ],
    )
    by_id = {o.action_id: o for o in outcomes}
    # a transmit never touches an existing member: the opted-out member is left alone and reported
    assert (by_id["t"].status, by_id["t"].error_code) == ("rejected", "member_exists")
    assert members[subscriber_hash("anna.schmidt@beispiel.de")].status == "unsubscribed"
    assert by_id["u"].status == "sent" and members[subscriber_hash("carla.wolf@beispiel.de")].status == "unsubscribed"
    # a field update of an unknown member is refused by the ESP, for that member only
    assert (by_id["f"].status, by_id["f"].error_code) == ("rejected", "member_not_found")
    assert not by_id["f"].retryable
    doi = writer.write("nl0001", [EspWrite("d", "start_doi", "anna.schmidt@beispiel.de")])
    assert doi[0].status == "sent" and members[subscriber_hash("anna.schmidt@beispiel.de")].status == "pending"


def test_each_kind_of_write_goes_in_its_own_batch_with_an_explicit_status(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = writer_for(mailchimp, monkeypatch)
    requests = recorded_requests(writer, monkeypatch)
    outcomes = writer.write(
        "nl0001",
        [
            EspWrite("t1", "transmit", "neu.eins@beispiel.de", {"FNAME": "Eins"}),
            EspWrite("d1", "start_doi", "neu.zwei@beispiel.de"),
            EspWrite("t2", "transmit", "anna.schmidt@beispiel.de"),
            EspWrite("u1", "unsubscribe", "carla.wolf@beispiel.de"),
        ],
    )
    batches = {
        body["members"][0]["status"]: body
        for method, path, body in requests
        if (method, path) == ("POST", "lists/nl0001")
    }
    assert len(requests) == 3 and set(batches) == {"subscribed", "pending", "unsubscribed"}
    # a transmit creates or leaves alone: update_existing false
    assert batches["subscribed"]["update_existing"] is False
    assert [m["email_address"] for m in batches["subscribed"]["members"]] == [
        "neu.eins@beispiel.de",
        "anna.schmidt@beispiel.de",
    ]
    assert batches["subscribed"]["members"][0]["merge_fields"] == {"FNAME": "Eins"}
    assert batches["pending"]["update_existing"] is True and batches["unsubscribed"]["update_existing"] is True
    assert not any("status_if_new" in m for body in batches.values() for m in body["members"])
    by_id = {o.action_id: o for o in outcomes}
    assert {k: o.status for k, o in by_id.items()} == {"t1": "sent", "d1": "sent", "t2": "rejected", "u1": "sent"}
    assert by_id["t2"].error_code == "member_exists"
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    assert members[subscriber_hash("anna.schmidt@beispiel.de")].status == "subscribed"
    assert members[subscriber_hash("neu.zwei@beispiel.de")].status == "pending"


def test_update_fields_goes_as_a_patch_without_status(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    members[subscriber_hash("anna.schmidt@beispiel.de")].status = "unsubscribed"
    writer = writer_for(mailchimp, monkeypatch)
    requests = recorded_requests(writer, monkeypatch)
    outcomes = writer.write(
        "nl0001",
        [
            EspWrite("a", "update_fields", "anna.schmidt@beispiel.de", {"FNAME": "Anna-Lena"}),
            EspWrite("c", "update_fields", "Carla.Wolf@beispiel.de", {"LNAME": "Wolff"}),
            EspWrite("n", "update_fields", "niemand@beispiel.de", {"FNAME": "X"}),
        ],
    )
    assert sorted(requests, key=lambda r: r[1]) == sorted(
        [
            ("PATCH", f"lists/nl0001/members/{subscriber_hash(address)}", {"merge_fields": fields})
            for address, fields in (
                ("anna.schmidt@beispiel.de", {"FNAME": "Anna-Lena"}),
                ("carla.wolf@beispiel.de", {"LNAME": "Wolff"}),
                ("niemand@beispiel.de", {"FNAME": "X"}),
            )
        ],
        key=lambda r: r[1],
    )
    assert {e.method for e in mailchimp.emulator.log.snapshot()} == {"PATCH"}
    by_id = {o.action_id: o for o in outcomes}
    assert by_id["a"].status == "sent" and by_id["c"].status == "sent"
    assert (by_id["n"].status, by_id["n"].error_code) == ("rejected", "member_not_found")
    anna = members[subscriber_hash("anna.schmidt@beispiel.de")]
    assert anna.merge_fields["FNAME"] == "Anna-Lena" and anna.status == "unsubscribed"
    assert members[subscriber_hash("carla.wolf@beispiel.de")].merge_fields["LNAME"] == "Wolff"


@pytest.mark.parametrize(
    "write",
    [
        EspWrite("t", "transmit", "neu@beispiel.de"),
        EspWrite("f", "update_fields", "anna.schmidt@beispiel.de", {"FNAME": "A"}),
        EspWrite("d", "delete", "carla.wolf@beispiel.de"),
    ],
    ids=["batch", "patch", "delete"],
)
def test_a_wrong_key_stops_the_writer_with_an_account_error(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch, write: EspWrite
) -> None:
    writer = writer_for(mailchimp, monkeypatch)
    wrong_key = "wrongkey0000000000000000000000-us1"
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", wrong_key)
    writer = MailchimpWriter(writer.account, retry=FAST)
    heard: list[WriteOutcome] = []
    with pytest.raises(EspAccountError) as refused:
        writer.write("nl0001", [write], on_batch=heard.extend)
    assert refused.value.account == "brand_main" and refused.value.status == 401
    message = str(refused.value)
    assert "brand_main" in message and "MAILBRIDGE_MAILCHIMP_MAIN_KEY" in message and wrong_key not in message
    assert heard == []  # the credentials failed, not the action: it gets no outcome
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    assert members[subscriber_hash("carla.wolf@beispiel.de")].status == "subscribed"


def test_outcomes_heard_before_the_key_was_refused_stay_reported(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", KEY)
    account = EspAccount(
        name="brand_main",
        type="mailchimp",
        api_key_env="MAILBRIDGE_MAILCHIMP_MAIN_KEY",
        base_url=mailchimp.base_url,
        max_connections=1,
    )
    writer = MailchimpWriter(account, retry=FAST, batch_size=1, is_blocked=lambda key: key == "gesperrt@beispiel.de")
    send = writer.client.request_json

    def revoked_after_the_first_batch(method: str, path: str, **options: Any) -> Any:
        answer = send(method, path, **options)
        mailchimp.state.accounts.pop(KEY, None)  # the key is revoked while the push runs
        return answer

    monkeypatch.setattr(writer.client, "request_json", revoked_after_the_first_batch)
    heard: list[WriteOutcome] = []
    writes = [EspWrite("b", "transmit", "gesperrt@beispiel.de")] + [
        EspWrite(f"a{i}", "transmit", f"r{i}@beispiel.de") for i in range(10)
    ]
    with pytest.raises(EspAccountError):
        writer.write("nl0001", writes, on_batch=heard.extend)
    assert {o.action_id: o.status for o in heard} == {"b": "rejected", "a0": "sent"}
    # once refused, the batches not yet started are not sent at all
    posts = [e.status for e in mailchimp.emulator.log.snapshot() if e.method == "POST"]
    assert posts == [200, 401]


def test_a_batch_refused_whole_is_split_until_the_bad_rows_are_isolated(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailchimp.emulator.faults.configure(FaultSettings(poison_addresses=("p3@beispiel.de", "p6@beispiel.de")))
    writes = [EspWrite(f"a{i}", "transmit", f"p{i}@beispiel.de") for i in range(8)]
    outcomes = {o.action_id: o for o in writer_for(mailchimp, monkeypatch).write("nl0001", writes)}
    assert {k for k, o in outcomes.items() if o.status == "rejected"} == {"a3", "a6"}
    assert all(o.status == "sent" for k, o in outcomes.items() if k not in ("a3", "a6"))
    assert outcomes["a3"].error_code == "invalid_resource"
    # 8 → 4+4 → 2+2+2+2 → the two poisoned pairs split into singles
    assert batch_posts(mailchimp) == 1 + 2 + 4 + 4


def test_blocklisted_and_invalid_addresses_are_refused_before_any_request(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = writer_for(mailchimp, monkeypatch, is_blocked=lambda key: key == "gesperrt@beispiel.de")
    outcomes = writer.write(
        "nl0001",
        [
            EspWrite("b", "transmit", "Gesperrt@Beispiel.de"),
            EspWrite("i", "start_doi", "kein-at-zeichen"),
            EspWrite("u", "unsubscribe", "GESPERRT@beispiel.de"),
        ],
    )
    by_id = {o.action_id: o for o in outcomes}
    assert by_id["b"].error_code == "refused_blocklisted" and by_id["b"].status == "rejected"
    assert by_id["i"].error_code == "refused_invalid_address"
    assert by_id["u"].status == "sent"  # taking a blocklisted address off a list is always allowed
    assert batch_posts(mailchimp) == 1


def test_delete_archives_and_permanent_delete_needs_the_flag(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    refused = writer_for(mailchimp, monkeypatch).write(
        "nl0001", [EspWrite("p", "delete_permanent", "emil.neu@beispiel.de")]
    )
    assert refused[0].error_code == "refused_permanent_delete"
    assert subscriber_hash("emil.neu@beispiel.de") in members
    archived = writer_for(mailchimp, monkeypatch).write("nl0001", [EspWrite("d", "delete", "carla.wolf@beispiel.de")])
    assert archived[0].status == "sent" and members[subscriber_hash("carla.wolf@beispiel.de")].status == "archived"
    erased = writer_for(mailchimp, monkeypatch, allow_permanent_delete=True).write(
        "nl0001", [EspWrite("p", "delete_permanent", "emil.neu@beispiel.de")]
    )
    assert erased[0].status == "sent" and subscriber_hash("emil.neu@beispiel.de") not in members


def test_deleting_a_member_archived_already_is_done_not_refused(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete asked for a member that the ESP archived meanwhile (Mailchimp answers 404):
    what it asks for holds, so it is not rejected and sent again every push."""
    writer = writer_for(mailchimp, monkeypatch)
    writer.write("nl0001", [EspWrite("d", "delete", "carla.wolf@beispiel.de")])
    (again,) = writer.write("nl0001", [EspWrite("d", "delete", "carla.wolf@beispiel.de")])
    assert (again.status, again.error_code) == ("sent", "already_archived")


def test_rate_limits_are_waited_out_and_transient_failures_reported(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailchimp.emulator.faults.configure(
        FaultSettings(seed=5, rate_429_retry_after=0.3, retry_after_seconds=0.01, rate_5xx=0.2)
    )
    writes = [EspWrite(f"a{i}", "transmit", f"r{i}@beispiel.de") for i in range(1500)]
    outcomes = writer_for(mailchimp, monkeypatch).write("nl0001", writes)
    assert [o.status for o in outcomes] == ["sent"] * 1500
    mailchimp.emulator.faults.configure(FaultSettings(rate_5xx=1.0))
    writer = writer_for(mailchimp, monkeypatch)
    writer.client.retry = RetryPolicy(max_retries=1, backoff_seconds=0.0)
    failed = writer.write("nl0001", [EspWrite("x", "transmit", "spaeter@beispiel.de")])
    assert failed[0].status == "failed" and failed[0].retryable


def lost_answer(method: str, path_regex: str) -> FaultSettings:
    """The first such write takes effect, then its connection hangs and drops: no answer."""
    from sandbox.faults import FaultRule

    rule = FaultRule(method=method, path_regex=path_regex, rate_applied_timeout=1.0, limit=1)
    return FaultSettings(hang_seconds=0.5, rules=[rule])


def impatient_writer(emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch, **options: Any) -> MailchimpWriter:
    """A writer whose client gives up on an answer after 0.2 s."""
    from pipelines.mailchimp.helpers import mailchimp_client

    writer = writer_for(emulator, monkeypatch, **options)
    writer.client = mailchimp_client(writer.account, FAST, timeout_seconds=0.2)
    return writer


def test_a_transmit_whose_answer_was_lost_after_it_took_effect_is_sent(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch subscribes the new address, then times out; sent again it meets "already a
    list member", which is its own doing: sent, not rejected. An opted-out member in the same
    batch is still left alone and rejected."""
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    members[subscriber_hash("anna.schmidt@beispiel.de")].status = "unsubscribed"
    mailchimp.emulator.faults.configure(lost_answer("POST", r"/3\.0/lists/nl0001"))
    outcomes = impatient_writer(mailchimp, monkeypatch).write(
        "nl0001",
        [
            EspWrite("new", "transmit", "neu.kunde@beispiel.de"),
            EspWrite("anna", "transmit", "anna.schmidt@beispiel.de"),
        ],
    )
    by_id = {o.action_id: o for o in outcomes}
    assert mailchimp.emulator.faults.as_json()["injected"] == {"applied_timeout": 1}
    assert batch_posts(mailchimp) == 2
    assert by_id["new"].status == "sent" and members[subscriber_hash("neu.kunde@beispiel.de")].status == "subscribed"
    assert (by_id["anna"].status, by_id["anna"].error_code) == ("rejected", "member_exists")
    assert members[subscriber_hash("anna.schmidt@beispiel.de")].status == "unsubscribed"


def test_every_other_write_whose_answer_was_lost_is_sent_once_applied(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = mailchimp.state.account_named("brand_main").lists["nl0001"].members
    cases = [
        ("POST", r"/3\.0/lists/nl0001", EspWrite("u", "unsubscribe", "carla.wolf@beispiel.de")),
        ("POST", r"/3\.0/lists/nl0001", EspWrite("d", "start_doi", "doi.neu@beispiel.de")),
        (
            "PATCH",
            r"/3\.0/lists/nl0001/members/.*",
            EspWrite("f", "update_fields", "carla.wolf@beispiel.de", {"FNAME": "C"}),
        ),
        ("DELETE", r"/3\.0/lists/nl0001/members/.*", EspWrite("a", "delete", "carla.wolf@beispiel.de")),
        ("POST", r".*/actions/delete-permanent", EspWrite("p", "delete_permanent", "emil.neu@beispiel.de")),
    ]
    for method, path, write in cases:
        mailchimp.emulator.faults.configure(lost_answer(method, path))
        (outcome,) = impatient_writer(mailchimp, monkeypatch, allow_permanent_delete=True).write("nl0001", [write])
        assert mailchimp.emulator.faults.as_json()["injected"] == {"applied_timeout": 1}, write.action
        assert outcome.status == "sent", (write.action, outcome)
    assert members[subscriber_hash("doi.neu@beispiel.de")].status == "pending"
    assert members[subscriber_hash("carla.wolf@beispiel.de")].status == "archived"
    assert members[subscriber_hash("carla.wolf@beispiel.de")].merge_fields["FNAME"] == "C"
    assert subscriber_hash("emil.neu@beispiel.de") not in members


def test_a_campaign_send_whose_answer_was_lost_is_sent(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from sandbox.mailchimp.state import Campaign

    account = mailchimp.state.account_named("brand_main")
    account.campaigns["cmp002"] = Campaign("cmp002", "nl0001", "Februar", "Neues", datetime.now(UTC))
    mailchimp.emulator.faults.configure(lost_answer("POST", r".*/campaigns/cmp002/actions/send"))
    impatient_writer(mailchimp, monkeypatch).send_campaign("cmp002")
    assert account.campaigns["cmp002"].status == "sent"
    sends = [e for e in mailchimp.emulator.log.snapshot() if e.path.endswith("/cmp002/actions/send")]
    assert len(sends) == 2


def test_a_transmit_whose_answer_came_back_unreadable_is_sent(
    mailchimp: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated 200 means the batch took effect; only its answer was lost."""
    from sandbox.faults import FaultRule

    rule = FaultRule(method="POST", path_regex=r"/3\.0/lists/nl0001", rate_truncated=1.0, limit=1)
    mailchimp.emulator.faults.configure(FaultSettings(rules=[rule]))
    (outcome,) = writer_for(mailchimp, monkeypatch).write(
        "nl0001", [EspWrite("t", "transmit", "neu.leser@beispiel.de")]
    )
    assert mailchimp.emulator.faults.as_json()["injected"] == {"truncated": 1}
    assert outcome.status == "sent"
