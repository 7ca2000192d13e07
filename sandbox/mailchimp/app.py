"""A stateful emulator of the Mailchimp Marketing API v3, served with Starlette.

Where the public docs leave a write's behaviour open, the emulator takes the conservative
reading of ESP_APIS.md, so that a connector working here does not rely on leniency:
- Every batch member (`POST /lists/{id}`) needs `status`. `status_if_new` is a field of
  `PUT …/members/{hash}` only; in a batch member it does not stand in for `status`.
- `update_existing: false` leaves existing members, archived ones included, untouched and
  reports them in `errors` (ERROR_CONTACT_EXISTS); `true` overwrites their status, the
  compliance refusals aside.
- An archived member stays archived under a write without `status`; an explicit status
  brings it back, but `subscribed` is refused when it was unsubscribed or cleaned before it
  was archived. A member loaded archived has no remembered prior status and may come back.
- `pending` on a subscribed member is accepted and demotes it, as client reports describe;
  no source says Mailchimp refuses it.
- `GET /reports/{id}/email-activity?since=…` lists every recipient, each with its activity
  since then (possibly none): the docs do not say whether recipients without new activity are
  left out, so a client must not rely on either.
- `GET /reports/{id}/abuse-reports` pages `abuse_reports` (id, campaign_id, list_id, email_id,
  email_address, merge_fields, vip, date) with `count`/`offset` and `total_items`, as the API
  reference lists them; the report's `abuse_reports` counts them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from email_validator import EmailNotValidError, validate_email
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.mailchimp.helpers import subscriber_hash
from sandbox.faults import FAILURE_KINDS, Fault, FaultInjector, FaultSettings, LoggedRequest, RequestLog
from sandbox.mailchimp.loader import load_into_state
from sandbox.mailchimp.state import (
    COMPLIANCE_STATES,
    WRITABLE_STATUSES,
    Account,
    MailchimpError,
    MailchimpList,
    MailchimpState,
    Member,
    Recipient,
    utcnow,
)
from sandbox.mailchimp.store import iso
from sandbox.scenario import Scenario

API_PREFIX = "/3.0"
MAX_CONNECTIONS = 10
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 10
MAX_BATCH_MEMBERS = 500
PROBLEM_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"

Handler = Callable[[Request, Account], Awaitable[Any]]


def problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": f"{time.time_ns():x}",
    }
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status_code=status, media_type="application/problem+json")


def parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MailchimpError(400, "Invalid Resource", f"The value of {name} is not a valid ISO 8601 time.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def field_tree(paths: str | None) -> dict[str, Any] | None:
    if not paths:
        return None
    tree: dict[str, Any] = {}
    for path in paths.split(","):
        node = tree
        for part in path.strip().split("."):
            if part:
                node = node.setdefault(part, {})
    return tree


def project(value: Any, include: dict[str, Any] | None, exclude: dict[str, Any] | None) -> Any:
    """Apply Mailchimp's `fields` / `exclude_fields` dotted-path filters."""
    if isinstance(value, list):
        return [project(item, include, exclude) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if include is not None and key not in include:
            continue
        sub_include = include[key] if include is not None and include[key] else None
        if exclude is not None and key in exclude and not exclude[key]:
            continue
        sub_exclude = exclude.get(key) if exclude is not None else None
        out[key] = project(item, sub_include, sub_exclude or None)
    return out


def dumps(body: Any) -> bytes:
    """The answer's JSON, by orjson (what it cannot write, such as integers beyond 64 bits, by
    the standard library)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, ensure_ascii=False).encode("utf-8")


def page_params(request: Request) -> tuple[int, int]:
    try:
        count = int(request.query_params.get("count", DEFAULT_PAGE_SIZE))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise MailchimpError(400, "Invalid Resource", "count and offset must be integers.") from None
    if count < 1 or count > MAX_PAGE_SIZE or offset < 0:
        raise MailchimpError(400, "Invalid Resource", f"count must be 1 to {MAX_PAGE_SIZE}, offset at least 0.")
    return count, offset


def valid_address(email_address: Any) -> bool:
    if not isinstance(email_address, str) or not email_address.strip():
        return False
    try:
        validate_email(email_address.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return False
    return True


def require_valid_address(email_address: Any) -> str:
    """The address, or Mailchimp's refusal of an address that looks fake or invalid."""
    if not valid_address(email_address):
        raise MailchimpError(
            400,
            "Invalid Resource",
            f"{email_address} looks fake or invalid, please enter a real email address.",
            [{"field": "email_address", "message": "This value is not a valid email address."}],
        )
    return str(email_address)


SERVER_ERRORS = (
    (500, "Internal Server Error"),
    (502, "Bad Gateway"),
    (503, "Service Unavailable"),
    (504, "Gateway Timeout"),
)


class DroppedConnection(Response):
    """No answer at all: after `after_seconds` the connection is reset under the client, as a
    load balancer or a dying server does. Needs uvicorn (the sandbox's server), whose receive
    callable belongs to the connection's request cycle."""

    def __init__(self, after_seconds: float = 0.0) -> None:
        super().__init__(status_code=599)  # never sent
        self.after_seconds = after_seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.after_seconds:
            await asyncio.sleep(self.after_seconds)
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if transport is None:
            raise RuntimeError("the sandbox drops connections only when served by uvicorn")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):  # linger 0: close with a reset, not a goodbye
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await asyncio.sleep(0)  # uvicorn hears of the lost connection first and answers nothing


def _applicable_faults(request: Request) -> set[str]:
    """The fault kinds a request can meet: a write can be applied before it times out; only a
    paged member read (past its first page) can see members drift ahead of its offset."""
    kinds = set(FAILURE_KINDS)
    if request.method == "GET":
        kinds.discard("applied_timeout")
    member_page = request.method == "GET" and request.url.path.endswith("/members")
    if not member_page or request.query_params.get("offset", "0") in ("", "0"):
        kinds.discard("offset_drift")
    return kinds


async def _request_signature(request: Request) -> str:
    """What tells two requests to one path apart, for the seeded draw: the query and the body."""
    query = "&".join(f"{key}={value}" for key, value in sorted(request.query_params.multi_items()))
    if request.method == "GET":
        return query
    return f"{query}#{hashlib.sha256(await request.body()).hexdigest()[:16]}"


class MailchimpEmulator:
    """The Starlette app plus its state, faults and request log."""

    def __init__(self, state: MailchimpState | None = None, faults: FaultSettings | None = None) -> None:
        self.state = state or MailchimpState()
        self.faults = FaultInjector(faults)
        self.log = RequestLog()
        self.max_connections = MAX_CONNECTIONS
        self._in_flight: dict[str, int] = {}
        self.peak_in_flight: dict[str, int] = {}
        routes = [
            Route("/_sandbox/requests", self.admin_requests, methods=["GET", "DELETE"]),
            Route("/_sandbox/faults", self.admin_faults, methods=["GET", "PUT"]),
            Route(
                "/_sandbox/accounts/{account}/lists/{list_id}/members/{subscriber_hash}/confirm",
                self.admin_confirm,
                methods=["POST"],
            ),
        ]
        api: list[tuple[str, Handler, list[str]]] = [
            ("/ping", self.ping, ["GET"]),
            ("/lists", self.get_lists, ["GET"]),
            ("/lists/{list_id}", self.get_list, ["GET"]),
            ("/lists/{list_id}", self.batch_subscribe, ["POST"]),
            ("/lists/{list_id}/members", self.get_members, ["GET"]),
            ("/lists/{list_id}/members", self.add_member, ["POST"]),
            ("/lists/{list_id}/members/{subscriber_hash}", self.get_member, ["GET"]),
            ("/lists/{list_id}/members/{subscriber_hash}", self.put_member, ["PUT"]),
            ("/lists/{list_id}/members/{subscriber_hash}", self.patch_member, ["PATCH"]),
            ("/lists/{list_id}/members/{subscriber_hash}", self.archive_member, ["DELETE"]),
            ("/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent", self.delete_permanent, ["POST"]),
            ("/campaigns", self.get_campaigns, ["GET"]),
            ("/campaigns/{campaign_id}", self.get_campaign, ["GET"]),
            ("/campaigns/{campaign_id}/actions/send", self.send_campaign, ["POST"]),
            ("/reports/{campaign_id}", self.get_report, ["GET"]),
            ("/reports/{campaign_id}/email-activity", self.get_email_activity, ["GET"]),
            ("/reports/{campaign_id}/sent-to", self.get_sent_to, ["GET"]),
            ("/reports/{campaign_id}/unsubscribed", self.get_unsubscribed, ["GET"]),
            ("/reports/{campaign_id}/abuse-reports", self.get_abuse_reports, ["GET"]),
        ]
        for path, handler, methods in api:
            routes.append(Route(API_PREFIX + path, self._endpoint(handler), methods=methods))
        self.app = Starlette(routes=routes)

    @classmethod
    def from_scenario(
        cls, scenario: Scenario, faults: FaultSettings | None = None, *, release_tables: bool = False
    ) -> MailchimpEmulator:
        """An emulator holding every Mailchimp account of the scenario (`release_tables`: the
        scenario's ESP tables are left empty once read)."""
        return cls(load_into_state(scenario, release_tables=release_tables), faults)

    # -- plumbing -------------------------------------------------------------

    def _account_for(self, request: Request) -> Account | None:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        key = ""
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return None
            key = decoded.partition(":")[2]
        elif scheme.lower() in ("bearer", "apikey"):
            key = credentials
        return self.state.accounts.get(key.strip())

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            account = self._account_for(request)
            entry = LoggedRequest(
                at=time.time(),
                account=account.name if account else None,
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                status=0,
            )
            try:
                response = await self._handle(request, account, handler, entry)
            finally:
                self.log.add(entry)
            entry.status = response.status_code
            return response

        return endpoint

    async def _handle(
        self, request: Request, account: Account | None, handler: Handler, entry: LoggedRequest
    ) -> Response:
        if account is None:
            return problem(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            )
        in_flight = self._in_flight.get(account.api_key, 0)
        if in_flight >= self.max_connections:
            entry.fault = "connection_limit"
            return problem(
                429,
                "Too Many Requests",
                f"You have exceeded the limit of {self.max_connections} simultaneous connections.",
            )
        self._in_flight[account.api_key] = in_flight + 1
        self.peak_in_flight[account.name] = max(self.peak_in_flight.get(account.name, 0), in_flight + 1)
        try:
            faults = self.faults.draw(
                request.url.path,
                request.method,
                signature=await _request_signature(request),
                applicable=_applicable_faults(request),
            )
            failure: Fault | None = None
            for fault in faults:
                if fault.kind == "slow":
                    await asyncio.sleep(self.faults.settings.slow_seconds)
                else:
                    failure = fault
            entry.fault = ",".join(f.kind for f in faults) or None
            kind = failure.kind if failure is not None else None
            if kind == "429":
                return problem(429, "Too Many Requests", "You have exceeded the limit of requests.")
            if kind == "429_retry_after":
                response = problem(429, "Too Many Requests", "You have exceeded the limit of requests.")
                response.headers["Retry-After"] = f"{self.faults.settings.retry_after_seconds:g}"
                return response
            if failure is not None and kind == "5xx":
                status, title = SERVER_ERRORS[failure.seed % len(SERVER_ERRORS)]
                return problem(status, title, "The service is temporarily unavailable.")
            if kind == "reset":
                return DroppedConnection()
            if kind == "timeout":
                return DroppedConnection(after_seconds=self.faults.settings.hang_seconds)
            if failure is not None and kind == "offset_drift":
                self._drift_members(request, account, failure)
            try:
                body = await handler(request, account)
            except MailchimpError as error:
                if kind == "applied_timeout":
                    return DroppedConnection(after_seconds=self.faults.settings.hang_seconds)
                return problem(error.status, error.title, error.detail, error.errors)
            if kind == "applied_timeout":
                # the write took effect; the client never hears so
                return DroppedConnection(after_seconds=self.faults.settings.hang_seconds)
            if body is None:
                return Response(status_code=204)
            if isinstance(body, dict):
                for collection in ("members", "lists", "campaigns", "emails", "sent_to", "unsubscribes"):
                    if isinstance(body.get(collection), list):
                        entry.items = len(body[collection])
                include = field_tree(request.query_params.get("fields"))
                exclude = field_tree(request.query_params.get("exclude_fields"))
                if include is not None or exclude is not None:  # no copy when nothing is filtered
                    body = project(body, include, exclude)
            payload = dumps(body)
            if kind == "truncated":
                payload = payload[: max(1, len(payload) // 2)]
            if kind == "malformed":
                # as long as the real answer, but a control byte in the middle is never valid JSON
                middle = len(payload) // 2
                payload = payload[:middle] + b"\x00" + payload[middle + 1 :]
            return Response(payload, media_type="application/json")
        finally:
            self._in_flight[account.api_key] -= 1

    def _drift_members(self, request: Request, account: Account, fault: Fault) -> None:
        """Offset drift: members inserted or removed ahead of the page about to be read, as
        sign-ups and erasures do between two page requests of a real list."""
        mailchimp_list = account.lists.get(request.path_params.get("list_id", ""))
        if mailchimp_list is None:
            return
        rng = random.Random(fault.seed)
        query = request.query_params
        try:
            _, offset = page_params(request)
            since = parse_time(query.get("since_last_changed"), "since_last_changed")
            before = parse_time(query.get("before_last_changed"), "before_last_changed")
        except MailchimpError:
            return  # the handler refuses the request itself
        count = max(1, self.faults.settings.drift_members)
        with self.state.lock:
            ahead = mailchimp_list.view(query.get("status") or None, since, before)[:offset]
            if ahead and rng.random() < 0.5:
                for member_id in rng.sample(ahead, min(count, len(ahead))):
                    del mailchimp_list.members[member_id]
                    mailchimp_list.forgotten.add(member_id)
                mailchimp_list.touch()
                return
            inserted = [
                self.state.new_member(mailchimp_list, f"drift.{rng.getrandbits(48):012x}@beispiel.de", "subscribed")
                for _ in range(count)
            ]
            for member in inserted:
                member.timestamp_signup = member.timestamp_opt = member.last_changed
            # ahead of every member already there: each later page shifts by `count`; in place,
            # so whoever holds the list's members sees the new order
            mailchimp_list.members.move_to_front(member.id for member in inserted)
            mailchimp_list.touch()

    async def _json_body(self, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MailchimpError(
                400, "JSON Parse Exception", "We encountered an unspecified JSON parsing error."
            ) from None
        if not isinstance(body, dict):
            raise MailchimpError(400, "Invalid Resource", "The request body must be a JSON object.")
        return body

    # -- admin (no auth: the sandbox binds to loopback only) --------------------

    async def admin_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.log.clear()
            return Response(status_code=204)
        return JSONResponse({"requests": self.log.as_json(), "peak_in_flight": self.peak_in_flight})

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "PUT":
            self.faults.configure(FaultSettings(**(await request.json())))
        return JSONResponse(self.faults.as_json())

    async def admin_confirm(self, request: Request) -> Response:
        """Confirm a pending double opt-in, as the subscriber clicking the DOI mail would."""
        try:
            account = self.state.account_named(request.path_params["account"])
            member = account.get_list(request.path_params["list_id"]).members[request.path_params["subscriber_hash"]]
        except (KeyError, MailchimpError):
            return problem(404, "Resource Not Found", "The requested resource could not be found.")
        with self.state.lock:
            if member.status != "pending":
                return problem(400, "Invalid Resource", "Only a pending member can confirm.")
            self._set_status(account.lists[member.list_id], member, "subscribed")
        return JSONResponse(member.as_json())

    # -- reads ----------------------------------------------------------------

    async def ping(self, request: Request, account: Account) -> Any:
        return {"health_status": "Everything's Chimpy!"}

    async def get_lists(self, request: Request, account: Account) -> Any:
        count, offset = page_params(request)
        lists = list(account.lists.values())
        return {
            "lists": [item.as_json() for item in lists[offset : offset + count]],
            "total_items": len(lists),
            "constraints": {"may_create": True, "max_instances": 0, "current_total_instances": len(lists)},
            "_links": [],
        }

    async def get_list(self, request: Request, account: Account) -> Any:
        return account.get_list(request.path_params["list_id"]).as_json()

    async def get_members(self, request: Request, account: Account) -> Any:
        mailchimp_list = account.get_list(request.path_params["list_id"])
        count, offset = page_params(request)
        query = request.query_params
        status = query.get("status") or None
        since = parse_time(query.get("since_last_changed"), "since_last_changed")
        before = parse_time(query.get("before_last_changed"), "before_last_changed")
        # a census of the ids (`fields=members.id`): no member body is built only to be dropped
        only_ids = (field_tree(query.get("fields")) or {}).get("members") == {"id": {}}
        with self.state.lock:
            ids = mailchimp_list.view(status, since, before)
            chosen = ids[offset : offset + count]
            if only_ids:
                page = [{"id": member_id} for member_id in chosen]
            else:
                page = [mailchimp_list.members.as_json(member_id) for member_id in chosen]
        return {"members": page, "list_id": mailchimp_list.id, "total_items": len(ids), "_links": []}

    def _member_key(self, account: Account, request: Request) -> tuple[MailchimpList, str]:
        mailchimp_list = account.get_list(request.path_params["list_id"])
        key = request.path_params["subscriber_hash"].lower()
        if "@" in key:
            key = subscriber_hash(key)
        return mailchimp_list, key

    def _member(self, account: Account, request: Request) -> tuple[MailchimpList, Member | None, str]:
        mailchimp_list, key = self._member_key(account, request)
        return mailchimp_list, mailchimp_list.members.get(key), key

    async def get_member(self, request: Request, account: Account) -> Any:
        mailchimp_list, key = self._member_key(account, request)
        if key not in mailchimp_list.members:
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        return mailchimp_list.members.as_json(key)  # a read leaves a member held as a row

    async def get_campaigns(self, request: Request, account: Account) -> Any:
        count, offset = page_params(request)
        query = request.query_params
        campaigns = list(account.campaigns.values())
        if query.get("status"):
            campaigns = [c for c in campaigns if c.status == query["status"]]
        if query.get("list_id"):
            campaigns = [c for c in campaigns if c.list_id == query["list_id"]]
        since = parse_time(query.get("since_send_time"), "since_send_time")
        if since is not None:
            campaigns = [c for c in campaigns if c.send_time is not None and c.send_time >= since]
        return {
            "campaigns": [c.as_json() for c in campaigns[offset : offset + count]],
            "total_items": len(campaigns),
            "_links": [],
        }

    async def get_campaign(self, request: Request, account: Account) -> Any:
        return account.get_campaign(request.path_params["campaign_id"]).as_json()

    async def get_report(self, request: Request, account: Account) -> Any:
        campaign = account.get_campaign(request.path_params["campaign_id"])
        if campaign.status != "sent":
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        return campaign.report()

    async def get_email_activity(self, request: Request, account: Account) -> Any:
        campaign = account.get_campaign(request.path_params["campaign_id"])
        count, offset = page_params(request)
        since = parse_time(request.query_params.get("since"), "since")
        recipients = campaign.recipient_list()
        emails = []
        for recipient in recipients[offset : offset + count]:
            activity = [a for a in recipient.actions() if since is None or a.timestamp >= since]
            emails.append(
                {
                    "campaign_id": campaign.id,
                    "list_id": recipient.list_id,
                    "list_is_active": True,
                    "email_id": recipient.email_id,
                    "email_address": recipient.email_address,
                    "activity": [
                        {
                            "action": a.action,
                            "type": a.type,
                            "timestamp": iso(a.timestamp),
                            "url": a.url,
                            "ip": a.ip,
                        }
                        for a in activity
                    ],
                    "_links": [],
                }
            )
        return {"emails": emails, "campaign_id": campaign.id, "total_items": len(recipients), "_links": []}

    async def get_sent_to(self, request: Request, account: Account) -> Any:
        campaign = account.get_campaign(request.path_params["campaign_id"])
        count, offset = page_params(request)
        recipients = campaign.recipient_list()
        rows = []
        for recipient in recipients[offset : offset + count]:
            opens = [a.timestamp for a in recipient.actions() if a.action == "open"]
            rows.append(
                {
                    "email_id": recipient.email_id,
                    "email_address": recipient.email_address,
                    "status": recipient.status,
                    "open_count": len(opens),
                    "last_open": iso(max(opens, default=None)),
                    "absplit_group": "",
                    "gmt_offset": 0,
                    "campaign_id": campaign.id,
                    "list_id": recipient.list_id,
                    "list_is_active": True,
                    "_links": [],
                }
            )
        return {"sent_to": rows, "campaign_id": campaign.id, "total_items": len(recipients), "_links": []}

    async def get_unsubscribed(self, request: Request, account: Account) -> Any:
        campaign = account.get_campaign(request.path_params["campaign_id"])
        count, offset = page_params(request)
        gone = [r for r in campaign.recipients.values() if r.unsubscribed_at is not None]
        rows = [
            {
                "email_id": r.email_id,
                "email_address": r.email_address,
                "timestamp": iso(r.unsubscribed_at),
                "reason": r.unsubscribe_reason,
                "campaign_id": campaign.id,
                "list_id": r.list_id,
                "list_is_active": True,
                "_links": [],
            }
            for r in gone[offset : offset + count]
        ]
        return {"unsubscribes": rows, "campaign_id": campaign.id, "total_items": len(gone), "_links": []}

    async def get_abuse_reports(self, request: Request, account: Account) -> Any:
        """GET /reports/{id}/abuse-reports: the recipients who marked the campaign as spam."""
        campaign = account.get_campaign(request.path_params["campaign_id"])
        count, offset = page_params(request)
        complained = [r for r in campaign.recipients.values() if r.complained_at is not None]
        rows = [
            {
                "id": offset + number + 1,
                "campaign_id": campaign.id,
                "list_id": r.list_id,
                "email_id": r.email_id,
                "email_address": r.email_address,
                "merge_fields": {},
                "vip": False,
                "date": iso(r.complained_at),
                "_links": [],
            }
            for number, r in enumerate(complained[offset : offset + count])
        ]
        return {"abuse_reports": rows, "campaign_id": campaign.id, "total_items": len(complained), "_links": []}

    # -- writes ---------------------------------------------------------------

    def _set_status(self, mailchimp_list: MailchimpList, member: Member, status: str, reason: str = "") -> None:
        previous = member.status
        member.last_changed = utcnow()
        if previous != status:
            member.status = status
            member.archived_from = previous if status == "archived" else None
            if status == "unsubscribed":
                member.unsubscribe_reason = reason or "N/A (Unsubscribed by an admin)"
            if status == "subscribed":
                # the opt-in time is when a status began: last_changed moves on every edit
                member.timestamp_opt = member.last_changed
        mailchimp_list.touch()

    def _apply_fields(self, member: Member, body: dict[str, Any]) -> None:
        if isinstance(body.get("merge_fields"), dict):
            member.merge_fields.update(body["merge_fields"])
        if isinstance(body.get("language"), str):
            member.language = body["language"]
        for name in ("ip_signup", "ip_opt"):
            if isinstance(body.get(name), str):
                setattr(member, name, body[name])
        for name in ("timestamp_signup", "timestamp_opt"):
            if body.get(name):
                setattr(member, name, parse_time(body[name], name))

    def upsert_member(
        self, mailchimp_list: MailchimpList, body: dict[str, Any], *, allow_update: bool, allow_create: bool
    ) -> tuple[Member, bool]:
        """Create or update one member with Mailchimp's rules; returns (member, created)."""
        email_address = require_valid_address(body.get("email_address"))
        status = body.get("status")
        if status is not None and status not in WRITABLE_STATUSES:
            raise MailchimpError(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                [{"field": "status", "message": "Data did not match any of the schemas described in anyOf."}],
            )
        member_id = subscriber_hash(email_address)
        member = mailchimp_list.members.get(member_id)
        # an archived member is still a member: status_if_new leaves it archived
        if member is not None:
            if not allow_update:
                raise MailchimpError(
                    400, "Member Exists", f"{email_address} is already a list member. Use PUT to insert or update."
                )
            if status == "subscribed" and _opted_out(member):
                raise MailchimpError(
                    400,
                    "Member In Compliance State",
                    f"{email_address} is already a list member in compliance state due to unsubscribe, "
                    "bounce, or compliance review and cannot be subscribed.",
                )
            if status is not None:
                self._set_status(mailchimp_list, member, status)
            else:
                member.last_changed = utcnow()
                mailchimp_list.touch()
            self._apply_fields(member, body)  # after the status: a timestamp_opt in the body wins
            return member, False
        if not allow_create:
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        new_status = status if status is not None else body.get("status_if_new")
        if new_status not in WRITABLE_STATUSES:
            raise MailchimpError(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                [{"field": "status", "message": "Schema describes string, NULL found instead"}],
            )
        if member_id in mailchimp_list.forgotten and new_status == "subscribed":
            raise MailchimpError(
                400,
                "Forgotten Email Not Subscribed",
                f"{email_address} was permanently deleted and cannot be re-imported. "
                "The contact must re-subscribe to get back on the list.",
            )
        now = utcnow()
        created = self.state.new_member(mailchimp_list, email_address, new_status, last_changed=now)
        created.timestamp_signup = now
        if new_status == "subscribed":
            created.timestamp_opt = now
        self._apply_fields(created, body)
        return created, True

    async def add_member(self, request: Request, account: Account) -> Any:
        mailchimp_list = account.get_list(request.path_params["list_id"])
        body = await self._json_body(request)
        if "status" not in body:
            raise MailchimpError(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                [{"field": "status", "message": "Schema describes string, NULL found instead"}],
            )
        with self.state.lock:
            member, _ = self.upsert_member(mailchimp_list, body, allow_update=False, allow_create=True)
            return member.as_json()

    async def put_member(self, request: Request, account: Account) -> Any:
        mailchimp_list, _, key = self._member(account, request)
        body = await self._json_body(request)
        if subscriber_hash(str(body.get("email_address", ""))) != key:
            raise MailchimpError(
                400, "Invalid Resource", "The subscriber hash does not match the email_address in the body."
            )
        with self.state.lock:
            member, _ = self.upsert_member(mailchimp_list, body, allow_update=True, allow_create=True)
            return member.as_json()

    async def patch_member(self, request: Request, account: Account) -> Any:
        mailchimp_list, member, _ = self._member(account, request)
        if member is None:
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        body = await self._json_body(request)
        body.setdefault("email_address", member.email_address)
        with self.state.lock:
            if subscriber_hash(str(body["email_address"])) != member.id:
                member = self._change_address(mailchimp_list, member, body["email_address"])
            updated, _ = self.upsert_member(mailchimp_list, body, allow_update=True, allow_create=False)
            return updated.as_json()

    def _change_address(self, mailchimp_list: MailchimpList, member: Member, new_address: Any) -> Member:
        """PATCH with another email_address: the member moves to the new id, its contact_id stays."""
        require_valid_address(new_address)
        new_id = subscriber_hash(str(new_address))
        if new_id in mailchimp_list.members:
            raise MailchimpError(400, "Member Exists", f"{new_address} is already a list member.")
        del mailchimp_list.members[member.id]
        mailchimp_list.moved_contact_ids.add(member.contact_id)
        member.id = new_id
        member.email_address = str(new_address).strip()
        member.unique_email_id = new_id[:10]
        member.last_changed = utcnow()
        mailchimp_list.members[new_id] = member
        mailchimp_list.touch()
        return member

    async def archive_member(self, request: Request, account: Account) -> Any:
        mailchimp_list, member, _ = self._member(account, request)
        if member is None or member.status == "archived":
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        with self.state.lock:
            self._set_status(mailchimp_list, member, "archived")
        return None

    async def delete_permanent(self, request: Request, account: Account) -> Any:
        mailchimp_list, member, key = self._member(account, request)
        if member is None:
            raise MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")
        with self.state.lock:
            del mailchimp_list.members[key]
            mailchimp_list.forgotten.add(key)
            mailchimp_list.touch()
        return None

    async def batch_subscribe(self, request: Request, account: Account) -> Any:
        """POST /lists/{id}: up to 500 members; errors are per member, the rest succeed."""
        mailchimp_list = account.get_list(request.path_params["list_id"])
        body = await self._json_body(request)
        members = body.get("members")
        if not isinstance(members, list):
            raise MailchimpError(
                400,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                [{"field": "members", "message": "Schema describes array, NULL found instead"}],
            )
        if len(members) > MAX_BATCH_MEMBERS:
            raise MailchimpError(
                400, "Invalid Resource", f"A batch can hold at most {MAX_BATCH_MEMBERS} members, got {len(members)}."
            )
        schema_errors = [
            {"field": f"members[{index}]{problem[0]}", "message": problem[1]}
            for index, item in enumerate(members)
            if (problem := _member_schema_problem(item)) is not None
        ]
        poison = {address.lower() for address in self.faults.settings.poison_addresses}
        schema_errors += [
            {"field": f"members[{index}].email_address", "message": "Injected fault: this member fails validation."}
            for index, item in enumerate(members)
            if isinstance(item, dict) and str(item.get("email_address", "")).lower() in poison
        ]
        if schema_errors:
            # the request body is validated as a whole: one malformed member refuses the batch
            raise MailchimpError(
                400, "Invalid Resource", "The resource submitted could not be validated.", schema_errors
            )
        update_existing = bool(body.get("update_existing", False))
        created: list[dict[str, Any]] = []
        updated: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with self.state.lock:
            for item in members:
                try:
                    member, was_created = self.upsert_member(
                        mailchimp_list, item, allow_update=update_existing, allow_create=True
                    )
                except MailchimpError as error:
                    errors.append(
                        {
                            "email_address": item.get("email_address"),
                            "error": f"{error.title}: {error.detail}",
                            "error_code": _batch_error_code(error),
                            "field": (error.errors or [{}])[0].get("field", ""),
                            "field_message": (error.errors or [{}])[0].get("message", ""),
                        }
                    )
                    continue
                (created if was_created else updated).append(member.as_json())
        return {
            "new_members": created,
            "updated_members": updated,
            "errors": errors,
            "total_created": len(created),
            "total_updated": len(updated),
            "error_count": len(errors),
            "_links": [],
        }

    async def send_campaign(self, request: Request, account: Account) -> Any:
        campaign = account.get_campaign(request.path_params["campaign_id"])
        if campaign.status == "sent":
            raise MailchimpError(400, "Bad Request", "Your Campaign has already been sent.")
        with self.state.lock:
            mailchimp_list = account.get_list(campaign.list_id)
            campaign.send_time = utcnow()
            campaign.status = "sent"
            for member_id, email_address in mailchimp_list.members.addresses("subscribed"):
                campaign.recipients[member_id] = Recipient(email_address, member_id, mailchimp_list.id)
            campaign.recipients_changed()
        return None


def _member_schema_problem(item: Any) -> tuple[str, str] | None:
    """A batch member's first schema problem as (the field's path under the member, message).
    `status` is required: the batch endpoint has no status_if_new to fall back on."""
    if not isinstance(item, dict):
        return "", "Schema describes object, another type found instead"
    if not isinstance(item.get("email_address"), str):
        return ".email_address", "Schema describes string, another type found instead"
    if item.get("status") is None:
        return ".status", "Schema describes string, NULL found instead"
    for name in ("status", "status_if_new"):
        if item.get(name) is not None and item[name] not in WRITABLE_STATUSES:
            return f".{name}", "Data did not match any of the schemas described in anyOf."
    if "merge_fields" in item and not isinstance(item["merge_fields"], dict):
        return ".merge_fields", "Schema describes object, another type found instead"
    return None


def _opted_out(member: Member) -> bool:
    """Unsubscribed or cleaned, now or before it was archived: only `pending` brings it back."""
    if member.status == "archived":
        return member.archived_from in COMPLIANCE_STATES
    return member.status in COMPLIANCE_STATES


def _batch_error_code(error: MailchimpError) -> str:
    if error.title == "Member Exists":
        return "ERROR_CONTACT_EXISTS"
    return "ERROR_GENERIC"
