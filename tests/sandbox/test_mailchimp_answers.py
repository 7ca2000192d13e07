"""The Mailchimp emulator's answers, byte for byte, on a small seeded world.

The digests in `mailchimp_answers.json` were recorded from the emulator as it was before its
members were held in a compact store: however the state is held, every answer (body, status
and content type) must stay the same. Two values are random by design and are masked before
hashing: `web_id` (from Python's salted `hash`) and a problem's `instance` (a clock).

Record again, only when an answer is meant to change, with
`MAILBRIDGE_RECORD_ANSWERS=1 pytest tests/sandbox/test_mailchimp_answers.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.mailchimp.helpers import subscriber_hash
from sandbox.generator import generate_scenario
from sandbox.mailchimp.store import iso
from tests.conftest import RunningEmulator

RECORDED = Path(__file__).with_name("mailchimp_answers.json")
MAIN_KEY = "sandbox0brandmain00000000000000-us1"
SHOP_KEY = "sandbox0brandshop00000000000000-us1"
REFERENCE_TIME = datetime(2026, 1, 5, tzinfo=UTC)
FROZEN_NOW = datetime(2026, 1, 6, 9, 30, tzinfo=UTC)
MASKS = (
    (re.compile(rb'"web_id": ?\d+'), b'"web_id":0'),
    (re.compile(rb'"instance": ?"[0-9a-f]+"'), b'"instance":""'),
)


def _masked(body: bytes) -> bytes:
    for pattern, replacement in MASKS:
        body = pattern.sub(replacement, body)
    return body


class Recorder:
    """Sends requests and keeps (name, status, content type, digest, length) per answer."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.answers: dict[str, dict[str, Any]] = {}

    def call(self, name: str, method: str, path: str, key: str = MAIN_KEY, **kwargs: Any) -> Any:
        assert name not in self.answers, name
        response = self.client.request(method, path, auth=("any", key), **kwargs)
        body = _masked(response.content)
        self.answers[name] = {
            "request": f"{method} {path} {json.dumps(kwargs.get('params') or {}, sort_keys=True)}",
            "status": response.status_code,
            "content_type": response.headers.get("content-type", ""),
            "sha256": hashlib.sha256(body).hexdigest(),
            "length": len(body),
        }
        try:
            return json.loads(response.content) if response.content else None
        except ValueError:
            return None


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch, serve_mailchimp: Any) -> Iterator[Recorder]:
    import sandbox.mailchimp.app as app_module
    import sandbox.mailchimp.state as state_module

    for module in (app_module, state_module):
        monkeypatch.setattr(module, "utcnow", lambda: FROZEN_NOW)
    scenario = generate_scenario(contacts=300, seed=11, reference_time=REFERENCE_TIME)
    draft = {"account": "brand_main", "campaign_id": "nl0001d01", "list_id": "nl0001", "status": "save"}
    campaigns = scenario.tables["esp_campaigns"]
    scenario.tables["esp_campaigns"] = pl.concat([campaigns, pl.DataFrame([draft], schema=campaigns.schema)])
    running: RunningEmulator = serve_mailchimp(scenario)
    with httpx.Client(base_url=running.base_url, timeout=30) as client:
        yield Recorder(client)


def _reads(rec: Recorder, tag: str) -> None:
    """Every kind of read, on both accounts; `tag` tells the rounds (before, after writes) apart."""
    rec.call(f"{tag} lists", "GET", "/lists")
    rec.call(f"{tag} lists paged", "GET", "/lists", params={"count": 1, "offset": 1})
    rec.call(f"{tag} shop lists", "GET", "/lists", key=SHOP_KEY)
    for list_id in ("nl0001", "pn0001"):
        rec.call(f"{tag} list {list_id}", "GET", f"/lists/{list_id}")
        members = f"/lists/{list_id}/members"
        rec.call(f"{tag} {list_id} default page", "GET", members)
        rec.call(f"{tag} {list_id} all", "GET", members, params={"count": 1000})
        rec.call(f"{tag} {list_id} middle page", "GET", members, params={"count": 17, "offset": 23})
        rec.call(f"{tag} {list_id} past the end", "GET", members, params={"count": 10, "offset": 5000})
        for status in ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived"):
            rec.call(f"{tag} {list_id} {status}", "GET", members, params={"count": 1000, "status": status})
        rec.call(
            f"{tag} {list_id} since",
            "GET",
            members,
            params={"count": 1000, "since_last_changed": "2025-06-01T00:00:00+00:00"},
        )
        rec.call(
            f"{tag} {list_id} since Z paged",
            "GET",
            members,
            params={"count": 5, "offset": 2, "since_last_changed": "2025-09-01T12:00:00Z"},
        )
        rec.call(
            f"{tag} {list_id} since and before",
            "GET",
            members,
            params={
                "count": 1000,
                "since_last_changed": "2024-01-01T00:00:00+02:00",
                "before_last_changed": "2025-10-01T00:00:00",
                "status": "subscribed",
            },
        )
        rec.call(f"{tag} {list_id} since now", "GET", members, params={"since_last_changed": FROZEN_NOW.isoformat()})
        rec.call(f"{tag} {list_id} census", "GET", members, params={"count": 1000, "fields": "members.id,total_items"})
        rec.call(f"{tag} {list_id} census only", "GET", members, params={"count": 50, "fields": "members.id"})
        rec.call(
            f"{tag} {list_id} fields",
            "GET",
            members,
            params={"count": 1000, "fields": "members.email_address,members.merge_fields.FNAME,members.status,list_id"},
        )
        rec.call(
            f"{tag} {list_id} exclude",
            "GET",
            members,
            params={"count": 1000, "exclude_fields": "members._links,members.stats,members.location.latitude,_links"},
        )
        rec.call(
            f"{tag} {list_id} fields and exclude",
            "GET",
            members,
            params={"count": 30, "fields": "members", "exclude_fields": "members.tags,members.merge_fields"},
        )
        rec.call(f"{tag} {list_id} bad count", "GET", members, params={"count": 1001})
        rec.call(f"{tag} {list_id} bad offset", "GET", members, params={"offset": -1})
        rec.call(f"{tag} {list_id} count not a number", "GET", members, params={"count": "ten"})
        rec.call(f"{tag} {list_id} bad since", "GET", members, params={"since_last_changed": "yesterday"})
        page = rec.call(f"{tag} {list_id} first ids", "GET", members, params={"count": 6, "fields": "members.id"})
        for number, member in enumerate(page["members"]):
            rec.call(f"{tag} {list_id} member {number}", "GET", f"{members}/{member['id']}")
            rec.call(
                f"{tag} {list_id} member {number} upper case",
                "GET",
                f"{members}/{member['id'].upper()}",
                params={"fields": "email_address,status,merge_fields"},
            )
        rec.call(f"{tag} {list_id} member unknown", "GET", f"{members}/{'0' * 32}")
        rec.call(f"{tag} {list_id} member by address", "GET", f"{members}/Nobody@Beispiel.de")
    rec.call(f"{tag} shop members", "GET", "/lists/sh0001/members", key=SHOP_KEY, params={"count": 1000})
    rec.call(f"{tag} unknown list", "GET", "/lists/nope/members")
    rec.call(f"{tag} other account's list", "GET", "/lists/sh0001/members")
    rec.call(f"{tag} wrong key", "GET", "/lists", key="wrong-us1")

    campaigns = rec.call(f"{tag} campaigns", "GET", "/campaigns", params={"count": 1000})
    rec.call(f"{tag} campaigns sent", "GET", "/campaigns", params={"status": "sent", "count": 3, "offset": 1})
    rec.call(f"{tag} campaigns of a list", "GET", "/campaigns", params={"list_id": "pn0001"})
    rec.call(f"{tag} campaigns since", "GET", "/campaigns", params={"since_send_time": "2025-12-01T00:00:00Z"})
    rec.call(f"{tag} shop campaigns", "GET", "/campaigns", key=SHOP_KEY)
    for campaign in campaigns["campaigns"]:
        campaign_id = campaign["id"]
        rec.call(f"{tag} campaign {campaign_id}", "GET", f"/campaigns/{campaign_id}")
        rec.call(f"{tag} report {campaign_id}", "GET", f"/reports/{campaign_id}")
        rec.call(
            f"{tag} report {campaign_id} fields",
            "GET",
            f"/reports/{campaign_id}",
            params={"fields": "opens,clicks.unique_clicks,emails_sent"},
        )
        for kind in ("email-activity", "sent-to", "unsubscribed", "abuse-reports"):
            path = f"/reports/{campaign_id}/{kind}"
            rec.call(f"{tag} {kind} {campaign_id}", "GET", path, params={"count": 1000})
            rec.call(f"{tag} {kind} {campaign_id} paged", "GET", path, params={"count": 9, "offset": 4})
        rec.call(
            f"{tag} email-activity {campaign_id} since",
            "GET",
            f"/reports/{campaign_id}/email-activity",
            params={"count": 1000, "since": "2025-12-20T00:00:00+00:00"},
        )
        rec.call(
            f"{tag} email-activity {campaign_id} fields",
            "GET",
            f"/reports/{campaign_id}/email-activity",
            params={"count": 50, "fields": "emails.email_address,emails.activity.action,total_items"},
        )
    rec.call(f"{tag} unknown campaign", "GET", "/campaigns/nope")
    rec.call(f"{tag} unknown report", "GET", "/reports/nope/sent-to")


def _writes(rec: Recorder) -> None:
    """Single writes, batches and their refusals, with the clock frozen."""
    page = rec.call("write: census", "GET", "/lists/nl0001/members", params={"count": 1000})
    by_status: dict[str, list[dict[str, Any]]] = {}
    for member in page["members"]:
        by_status.setdefault(member["status"], []).append(member)
    subscribed, unsubscribed = by_status["subscribed"], by_status["unsubscribed"]
    members = "/lists/nl0001/members"
    new = "neu.kunde@beispiel.de"
    rec.call(
        "write: put new",
        "PUT",
        f"{members}/{subscriber_hash(new)}",
        json={"email_address": new, "status_if_new": "subscribed", "merge_fields": {"FNAME": "Neu", "LNAME": "Ü"}},
    )
    rec.call("write: post existing", "POST", members, json={"email_address": new, "status": "subscribed"})
    rec.call(
        "write: post new pending",
        "POST",
        members,
        json={"email_address": "doi@beispiel.de", "status": "pending", "language": "de", "ip_signup": "10.0.0.1"},
    )
    rec.call("write: post without status", "POST", members, json={"email_address": "x@beispiel.de"})
    rec.call(
        "write: post invalid address", "POST", members, json={"email_address": "not an address", "status": "subscribed"}
    )
    rec.call("write: post bad json", "POST", members, content=b"{nope", headers={"content-type": "application/json"})
    first = subscribed[0]
    rec.call(
        "write: put existing status_if_new",
        "PUT",
        f"{members}/{first['id']}",
        json={"email_address": first["email_address"], "status_if_new": "pending", "merge_fields": {"LNAME": "Neu"}},
    )
    rec.call(
        "write: put hash mismatch",
        "PUT",
        f"{members}/{first['id']}",
        json={"email_address": "someone.else@beispiel.de", "status": "subscribed"},
    )
    rec.call(
        "write: patch fields",
        "PATCH",
        f"{members}/{subscribed[1]['id']}",
        json={
            "merge_fields": {"FNAME": "Gün\u00e9ther", "SALUTATION": "Herr"},
            "timestamp_opt": "2025-01-02T03:04:05Z",
        },
    )
    rec.call(
        "write: patch address",
        "PATCH",
        f"{members}/{subscribed[2]['id']}",
        json={"email_address": "umgezogen@beispiel.de"},
    )
    rec.call(
        "write: put at the moved address",
        "PUT",
        f"{members}/{subscribed[2]['id']}",
        json={"email_address": subscribed[2]["email_address"], "status_if_new": "subscribed"},
    )
    rec.call(
        "write: patch to an existing address",
        "PATCH",
        f"{members}/{subscribed[3]['id']}",
        json={"email_address": subscribed[4]["email_address"]},
    )
    rec.call(
        "write: resubscribe an unsubscribed",
        "PUT",
        f"{members}/{unsubscribed[0]['id']}",
        json={"email_address": unsubscribed[0]["email_address"], "status": "subscribed"},
    )
    rec.call(
        "write: pending on an unsubscribed",
        "PUT",
        f"{members}/{unsubscribed[0]['id']}",
        json={"email_address": unsubscribed[0]["email_address"], "status": "pending"},
    )
    rec.call("write: unsubscribe", "PATCH", f"{members}/{subscribed[5]['id']}", json={"status": "unsubscribed"})
    rec.call("write: archive", "DELETE", f"{members}/{subscribed[5]['id']}")
    rec.call("write: archive again", "DELETE", f"{members}/{subscribed[5]['id']}")
    rec.call(
        "write: archived stays archived",
        "PUT",
        f"{members}/{subscribed[5]['id']}",
        json={"email_address": subscribed[5]["email_address"], "status_if_new": "subscribed"},
    )
    rec.call(
        "write: archived opt-out cannot subscribe",
        "PUT",
        f"{members}/{subscribed[5]['id']}",
        json={"email_address": subscribed[5]["email_address"], "status": "subscribed"},
    )
    rec.call("write: erase", "POST", f"{members}/{subscribed[6]['id']}/actions/delete-permanent")
    rec.call("write: erase unknown", "POST", f"{members}/{'1' * 32}/actions/delete-permanent")
    rec.call(
        "write: forgotten cannot subscribe",
        "PUT",
        f"{members}/{subscribed[6]['id']}",
        json={"email_address": subscribed[6]["email_address"], "status": "subscribed"},
    )
    rec.call(
        "write: forgotten may start doi",
        "PUT",
        f"{members}/{subscribed[6]['id']}",
        json={"email_address": subscribed[6]["email_address"], "status": "pending"},
    )
    batch = [
        {"email_address": "batch.eins@beispiel.de", "status": "subscribed", "merge_fields": {"FNAME": "Eins"}},
        {"email_address": subscribed[7]["email_address"], "status": "unsubscribed"},
        {"email_address": unsubscribed[1]["email_address"], "status": "subscribed"},
        {"email_address": "kaputt@", "status": "subscribed"},
    ]
    rec.call("write: batch no update", "POST", "/lists/nl0001", json={"members": batch, "update_existing": False})
    batch[0]["email_address"] = "batch.zwei@beispiel.de"
    rec.call("write: batch update", "POST", "/lists/nl0001", json={"members": batch, "update_existing": True})
    rec.call(
        "write: batch schema",
        "POST",
        "/lists/nl0001",
        json={"members": [{"email_address": "a@beispiel.de"}, {"email_address": 5, "status": "x"}, "no"]},
    )
    rec.call("write: batch without members", "POST", "/lists/nl0001", json={"update_existing": True})
    rec.call(
        "write: batch too big",
        "POST",
        "/lists/nl0001",
        json={"members": [{"email_address": f"m{n}@beispiel.de", "status": "subscribed"} for n in range(501)]},
    )
    campaigns = rec.call("write: campaigns", "GET", "/campaigns", params={"count": 1000})
    for campaign in campaigns["campaigns"]:
        rec.call(f"write: send {campaign['id']}", "POST", f"/campaigns/{campaign['id']}/actions/send")


def test_the_answers_are_the_recorded_bytes(recorder: Recorder) -> None:
    _reads(recorder, "before")
    _writes(recorder)
    _reads(recorder, "after")
    answers = recorder.answers
    if os.environ.get("MAILBRIDGE_RECORD_ANSWERS"):
        RECORDED.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n", "utf-8")
    recorded = json.loads(RECORDED.read_text("utf-8"))
    assert list(answers) == list(recorded)
    differing = [name for name in recorded if answers[name] != recorded[name]]
    assert not differing, f"{len(differing)} answers changed, the first: {differing[:5]}"


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.one_of(st.none(), st.just(UTC), st.timezones()),
    )
)
def test_times_are_written_as_before(value: datetime) -> None:
    assert iso(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
