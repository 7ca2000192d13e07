"""A share of a world changed on both sides, of every kind, the way its users change it: the CRM
through its own tables (as the mapping names them), the ESP through its API.

Kinds, on each side: a status (an opt-out), fields (a first name), an address, a delete and a
new subscriber. At the ESP a delete is an archive (`DELETE …/members/{hash}`) or, for every
second one, a permanent delete, and a new subscriber is a member added `subscribed`. In the CRM
a delete removes the contact with its assignments, and a new subscriber is a new contact
assigned `subscribed` to a linked list. The CRM's modified time moves with every contact change.

Which rows change is fixed by the round: round `r` changes the rows whose position in the
scenario is `r` modulo the step, so the rows of different rounds never meet (up to `step`
rounds). The bench's "1 % changed" and the incremental-equals-full tests use it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

from mailbridge.config import MailbridgeConfig
from sandbox.crm_db import crm_tables
from sandbox.scenario import Scenario

KINDS = ("status", "fields", "address", "delete", "new")


@dataclass(frozen=True)
class WorldChanges:
    crm: dict[str, int]
    esp: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.crm.values()) + sum(self.esp.values())


def chosen(rows: list[dict[str, Any]], fraction: float, round_: int) -> list[tuple[str, dict[str, Any]]]:
    """The rows this round changes, `fraction` of them, each with its kind (every kind in turn)."""
    step = max(1, round(1 / fraction))
    picked = rows[round_ % step :: step]
    return [(KINDS[index % len(KINDS)], row) for index, row in enumerate(picked)]


def change_crm(config: MailbridgeConfig, scenario: Scenario, fraction: float, round_: int) -> dict[str, int]:
    """`fraction` of the CRM's contacts changed through its tables; the count of each kind."""
    crm = config.crm
    tables = crm_tables(crm, sa.MetaData())
    contacts, assignments = tables["contacts"], tables["assignments"]
    column = crm.contacts.columns
    assigned = crm.assignments.columns if crm.assignments is not None else {}
    now = datetime.now(ZoneInfo(crm.timezone)).replace(tzinfo=None, microsecond=0)
    crm_word: dict[str, str] = {}
    for crm_value, canonical in crm.status_values.items():
        crm_word.setdefault(canonical, crm_value)
    linked_lists = sorted({link.crm_list_id for link in config.list_links})
    done: Counter[str] = Counter()
    engine = sa.create_engine(crm.connection_url(config.base_dir))
    try:
        with engine.begin() as connection:
            next_id: int = (
                connection.execute(sa.select(sa.func.max(contacts.c[column["contact_id"]]))).scalar_one() or 0
            )
            rows = scenario.table("crm_contacts").sort("contact_id").rows(named=True)
            for kind, row in chosen(rows, fraction, round_):
                statement: sa.Update | sa.Delete | sa.Insert
                contact = contacts.c[column["contact_id"]] == row["contact_id"]
                touched = {column["modified_at"]: now} if "modified_at" in column else {}
                if kind == "status":
                    if assignments is None:
                        continue
                    statement = (
                        assignments.update()
                        .where(assignments.c[assigned["contact_id"]] == row["contact_id"])
                        .values(
                            {
                                assigned["status"]: crm_word["unsubscribed"],
                                assigned["status_changed_at"]: now,
                                **({assigned["status_set_by"]: "changes"} if "status_set_by" in assigned else {}),
                            }
                        )
                    )
                elif kind == "fields":
                    statement = (
                        contacts.update().where(contact).values({column["first_name"]: f"Changed{round_}", **touched})
                    )
                elif kind == "address":
                    address = f"moved.{round_}.{row['contact_id']}@beispiel.de"
                    statement = contacts.update().where(contact).values({column["email"]: address, **touched})
                elif kind == "delete":
                    if assignments is not None:
                        connection.execute(
                            assignments.delete().where(assignments.c[assigned["contact_id"]] == row["contact_id"])
                        )
                    statement = contacts.delete().where(contact)
                else:
                    next_id += 1
                    connection.execute(
                        contacts.insert().values(
                            {
                                column["contact_id"]: next_id,
                                column["email"]: f"new.crm.{round_}.{next_id}@beispiel.de",
                                column["first_name"]: "Neu",
                                **touched,
                            }
                        )
                    )
                    if assignments is None:
                        continue
                    statement = assignments.insert().values(
                        {
                            assigned["contact_id"]: next_id,
                            assigned["list_id"]: linked_lists[next_id % len(linked_lists)],
                            assigned["status"]: crm_word["subscribed"],
                            assigned["status_changed_at"]: now,
                        }
                    )
                if connection.execute(statement).rowcount:
                    done[kind] += 1
    finally:
        engine.dispose()
    return dict(done)


def change_esp(config: MailbridgeConfig, scenario: Scenario, fraction: float, round_: int) -> dict[str, int]:
    """`fraction` of the ESP's members changed through its API; the count of each kind.
    Every write must be taken: a refused one raises, naming the member."""
    from pipelines.mailchimp.helpers import subscriber_hash

    keys = {account.name: account.api_key for account in scenario.accounts}
    accounts = {account.name: account for account in config.esp_accounts}
    done: Counter[str] = Counter()
    rows = scenario.table("esp_members").sort("account", "list_id", "email").rows(named=True)
    clients: dict[str, httpx.Client] = {}
    try:
        for index, (kind, row) in enumerate(chosen(rows, fraction, round_)):
            name = row["account"]
            if name not in clients:
                clients[name] = httpx.Client(
                    base_url=str(accounts[name].base_url), auth=("changes", keys[name]), timeout=30
                )
            client = clients[name]
            member = f"/lists/{row['list_id']}/members/{subscriber_hash(row['email'])}"
            if kind == "status":
                answer = client.patch(member, json={"status": "unsubscribed"})
            elif kind == "fields":
                answer = client.patch(member, json={"merge_fields": {"FNAME": f"Changed{round_}"}})
            elif kind == "address":
                answer = client.patch(member, json={"email_address": f"moved.esp.{round_}.{index}@beispiel.de"})
            elif kind == "delete":
                answer = client.post(f"{member}/actions/delete-permanent") if index % 2 else client.delete(member)
            else:
                answer = client.post(
                    f"/lists/{row['list_id']}/members",
                    json={"email_address": f"new.esp.{round_}.{index}@beispiel.de", "status": "subscribed"},
                )
            if answer.status_code >= 400:
                raise RuntimeError(f"{kind} of {row['email']} in {name}/{row['list_id']} refused: {answer.text[:200]}")
            done[kind] += 1
    finally:
        for client in clients.values():
            client.close()
    return dict(done)


def change_world(config: MailbridgeConfig, scenario: Scenario, fraction: float, round_: int = 0) -> WorldChanges:
    """`fraction` of each side changed, every kind among them."""
    return WorldChanges(
        crm=change_crm(config, scenario, fraction, round_), esp=change_esp(config, scenario, fraction, round_)
    )
