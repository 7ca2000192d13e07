"""CRM write-back: the queue's CRM actions applied through SQLAlchemy.

Each chunk of actions is one transaction and each action one savepoint in it, so a row the
database refuses costs only that action. Every action first reads the CRM row again and
compares it with what the sync extracted (the optimistic check): when a CRM user changed
it since, the write is skipped and reported as stale. A write that is already in the CRM
(a push that died after the commit and is run again) counts as written, not as stale.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from mailbridge.config import ConfigError, CrmConfig, FieldMapping, TableMapping
from mailbridge.email_key import try_email_key
from pipelines.crm import _reflect
from pipelines.crm.values import _as_utc
from pipelines.writers import WriteOutcome

CRM_ACTIONS = (
    "set_status",
    "mark_bounced",
    "create_assignment",
    "create_contact",
    "delete_assignment",
    "update_crm_fields",
    "update_crm_email",
    "record_consent",
)
# the consent a person's decided status records
DECIDED_CONSENT_KINDS = {"subscribed": "decided_opt_in", "unsubscribed": "decided_opt_out"}
CONTACT_CHECK_FIELDS = ("email", "first_name", "last_name", "salutation", "modified_at")


class StaleRow(Exception):
    """The CRM row changed since it was extracted: the write is skipped."""


class NotWritable(Exception):
    """The action cannot be written to this CRM as mapped; permanent."""


@dataclass(frozen=True)
class CrmAction:
    """One ready CRM action, with what the sync extracted for the optimistic check."""

    action_id: str
    action: str
    action_source: str
    list_link_id: str
    crm_list_id: str
    crm_contact_id: str | None
    email_address: str
    set_by: str
    esp_status: str | None = None
    esp_status_changed_at: datetime | None = None
    crm_task: str | None = None
    # the assignment as extracted (None: the sync saw none)
    extracted_status_value: str | None = None
    extracted_status_changed_at: datetime | None = None
    # the contact as extracted, by canonical field (empty: the sync saw none)
    extracted_contact: Mapping[str, Any] = field(default_factory=dict)
    # the ESP member's values, by field name (names, salutation, mapped fields)
    esp_values: Mapping[str, Any] = field(default_factory=dict)
    # update_crm_fields: the fields to take from the ESP
    field_updates: Mapping[str, Any] = field(default_factory=dict)
    # a status the queue names instead of the ESP's (the CRM half of a person's unsubscribe),
    # when it was decided, and the decision's note for the consent record
    status: str | None = None
    decided_at: datetime | None = None
    note: str | None = None

    @property
    def target_status(self) -> str | None:
        if self.status is not None:
            return self.status
        return "bounced_hard" if self.action == "mark_bounced" else self.esp_status

    @property
    def status_time(self) -> datetime | None:
        """When the written status began: the decision's time for a person's decision, else the
        ESP's status time."""
        return self.decided_at if self.status is not None else self.esp_status_changed_at


class CrmWriter:
    """Applies CRM actions to one SQL CRM, as mapped in mailbridge.yaml."""

    def __init__(
        self, url: str, crm: CrmConfig, field_mappings: Sequence[FieldMapping] = (), *, chunk_size: int = 500
    ) -> None:
        self.crm = crm
        self.zone = ZoneInfo(crm.timezone)
        self.field_mappings = {mapping.name: mapping for mapping in field_mappings}
        self.chunk_size = chunk_size
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            _real_sqlite_transactions(self.engine)
        self._tables: dict[str, sa.Table] = {}
        self._contacts_by_address: dict[str, str] = {}
        self._new_addresses: dict[str, str] = {}
        self.statements = 0

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> CrmWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public

    def apply(self, actions: Sequence[CrmAction]) -> list[WriteOutcome]:
        """Write every action; one outcome each, in order."""
        outcomes: list[WriteOutcome] = []
        self._contacts_by_address = (
            self._contact_addresses() if any(a.action == "create_contact" for a in actions) else {}
        )
        for start in range(0, len(actions), self.chunk_size):
            chunk = actions[start : start + self.chunk_size]
            with self.engine.begin() as connection:
                for action in chunk:
                    outcomes.append(self._apply_one(connection, action))
        return outcomes

    def write_reactions(self, reactions: Sequence[Mapping[str, Any]]) -> int:
        """Each recipient's reaction to a mailing into `crm.mailing_reactions`: the row of the
        contact and mailing updated, or inserted when it has none. Times in the CRM's zone.
        Returns the rows written."""
        if self.crm.mailing_reactions is None or not reactions:
            return 0
        table = self._table("mailing_reactions")
        contact, mailing = self._col("mailing_reactions", "contact_id"), self._col("mailing_reactions", "mailing_id")
        written = 0
        for start in range(0, len(reactions), self.chunk_size):
            with self.engine.begin() as connection:
                for reaction in reactions[start : start + self.chunk_size]:
                    values = {
                        name: self._local(value) if isinstance(value, datetime) else value
                        for name, value in reaction.items()
                    }
                    contact_id = self._id_value("mailing_reactions", str(values.pop("contact_id")))
                    mailing_id = values.pop("mailing_id")
                    where = sa.and_(contact == contact_id, mailing == mailing_id)
                    mapped = self._mapped("mailing_reactions", values)
                    updated = connection.execute(table.update().where(where).values(mapped)) if mapped else None
                    self.statements += 1
                    if updated is None or updated.rowcount == 0:
                        row = {"contact_id": contact_id, "mailing_id": mailing_id, **values}
                        connection.execute(table.insert().values(self._mapped("mailing_reactions", row)))
                        self.statements += 1
                    written += 1
        return written

    def clear_tasks(self, done: Sequence[tuple[str, str, str]]) -> int:
        """Empty the task column of assignments whose task was executed, if it still says so."""
        mapping = self.crm.assignments
        if "task" not in mapping.columns or not done:
            return 0
        table = self._table("assignments")
        cleared = 0
        with self.engine.begin() as connection:
            for contact_id, list_id, task in done:
                result = connection.execute(
                    table.update()
                    .where(*self._assignment_key(table, contact_id, list_id), self._col("assignments", "task") == task)
                    .values({mapping.columns["task"]: None})
                )
                cleared += result.rowcount or 0
        return cleared

    def remove_assignments(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Delete the assignments of members deleted at the ESP (DESIGN: delete removes the
        CRM assignment too), so the next sync does not bring them back."""
        if not pairs:
            return 0
        table = self._table("assignments")
        removed = 0
        with self.engine.begin() as connection:
            for contact_id, list_id in pairs:
                # the list's duplicate contacts of the address go too: one left assigned would
                # bring the deleted member back as a status to take
                address = connection.execute(
                    sa.select(self._col("contacts", "email")).where(
                        self._col("contacts", "contact_id") == self._id_value("contacts", contact_id)
                    )
                ).scalar()
                duplicates = [found for found, _ in self._list_duplicates(connection, list_id, contact_id, address)]
                for each in [contact_id, *duplicates]:
                    result = connection.execute(table.delete().where(*self._assignment_key(table, each, list_id)))
                    removed += result.rowcount or 0
                    self.statements += 1
        return removed

    # ------------------------------------------------------------------ one action

    def _apply_one(self, connection: sa.Connection, action: CrmAction) -> WriteOutcome:
        handler = getattr(self, f"_{action.action}", None)
        if handler is None:
            return WriteOutcome(action.action_id, "rejected", "unknown_action", f"no CRM write for {action.action!r}")
        savepoint = connection.begin_nested()
        self._new_addresses = {}
        try:
            note = handler(connection, action)
        except StaleRow as stale:
            savepoint.rollback()
            return WriteOutcome(action.action_id, "stale", "crm_row_changed", str(stale))
        except (NotWritable, ConfigError) as error:
            savepoint.rollback()
            return WriteOutcome(action.action_id, "rejected", "not_writable", str(error))
        except sa.exc.DBAPIError as error:
            savepoint.rollback()
            permanent = isinstance(error, (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.ProgrammingError))
            message = str(error.orig).splitlines()[0][:500] if error.orig else type(error).__name__
            code = f"crm_{type(error).__name__}"
            if permanent:
                return WriteOutcome(action.action_id, "rejected", code, message)
            return WriteOutcome(action.action_id, "failed", code, message)
        savepoint.commit()
        self._contacts_by_address.update(self._new_addresses)
        return WriteOutcome(action.action_id, "sent", "already_applied" if note == "already" else None, None)

    def _set_status(self, connection: sa.Connection, action: CrmAction) -> str | None:
        target = self._status_value(action)
        current = self._current_assignment(connection, action)
        if current is None:
            raise StaleRow("the assignment was removed from the CRM since the sync")
        if current["status"] == target:
            return "already"
        self._check_assignment(current, action)
        self._update_assignment(connection, action, self._status_values(action, target))
        if action.action == "mark_bounced":
            self._mark_address_bounced(connection, action)
        if action.status is not None:
            # a person decided it: the consent record names them and keeps their note (a DOI
            # that has started is no consent yet)
            kind = DECIDED_CONSENT_KINDS.get(action.status)
            if kind is not None and action.crm_contact_id is not None:
                self._insert_consent(connection, action, action.crm_contact_id, kind)
        else:
            self._consent_if_opt_in(connection, action)
        return None

    _mark_bounced = _set_status

    def _create_assignment(self, connection: sa.Connection, action: CrmAction) -> str | None:
        if action.crm_contact_id is None:
            raise NotWritable("create_assignment needs a CRM contact; this address has none (create_contact)")
        return self._insert_assignment(connection, action, action.crm_contact_id)

    def _create_contact(self, connection: sa.Connection, action: CrmAction) -> str | None:
        address = action.email_address.strip().lower()
        existing = self._contacts_by_address.get(address)
        if existing is not None:
            # the contact exists by now (made for another list of this push, by an earlier
            # interrupted push, or by a CRM user): it gets the assignment, behind its own check
            return self._insert_assignment(connection, action, existing)
        contacts = self._table("contacts")
        values: dict[str, Any] = {"email": action.email_address}
        for name in ("first_name", "last_name", "salutation"):
            if action.esp_values.get(name) is not None:
                values[name] = action.esp_values[name]
        values["needs_review"] = True
        values["modified_at"] = self._local(datetime.now(UTC))
        contact_id = self._new_contact_id(connection)
        if contact_id is not None:
            values["contact_id"] = contact_id
        result = connection.execute(contacts.insert().values(self._mapped("contacts", values)))
        self.statements += 1
        if contact_id is None:
            inserted = result.inserted_primary_key
            assert inserted is not None
            contact_id = inserted[0]
        self._new_addresses[address] = str(contact_id)
        return self._insert_assignment(connection, action, str(contact_id))

    def _contact_addresses(self) -> dict[str, str]:
        """Every CRM contact's address (trimmed, lower-case) → its id, read once per apply;
        a lookup per new contact would scan the table each time. Several contacts with one
        address: the lowest id, as the duplicate rule takes when names do not decide."""
        query = sa.select(self._col("contacts", "email"), self._col("contacts", "contact_id"))
        addresses: dict[str, str] = {}
        with self.engine.connect() as connection:
            for email, contact_id in connection.execute(query):
                if email is None:
                    continue
                address, contact = str(email).strip().lower(), str(contact_id)
                known = addresses.get(address)
                if known is None or (len(contact), contact) < (len(known), known):
                    addresses[address] = contact
        return addresses

    def _delete_assignment(self, connection: sa.Connection, action: CrmAction) -> str | None:
        current = self._current_assignment(connection, action)
        if current is None:
            return "already"
        self._check_assignment(current, action)
        table = self._table("assignments")
        connection.execute(
            table.delete().where(*self._assignment_key(table, action.crm_contact_id, action.crm_list_id))
        )
        self.statements += 1
        return None

    def _update_crm_fields(self, connection: sa.Connection, action: CrmAction) -> str | None:
        if not action.field_updates:
            raise NotWritable("no field differs in favour of the ESP: nothing to update")
        values: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for name, value in action.field_updates.items():
            if name in self.field_mappings:
                mapping = self.field_mappings[name]
                custom[mapping.crm_column] = _typed(value, mapping)
            elif name in self.crm.contacts.columns:
                values[name] = value
            else:
                raise NotWritable(f"the field {name!r} is not mapped to a CRM column")
        current = self._current_contact(connection, action)
        mapped = self._mapped("contacts", values) | custom
        if all(_same(current.get(column), value) for column, value in mapped.items()):
            return "already"
        self._check_contact(current, action)
        if "modified_at" in self.crm.contacts.columns:
            mapped[self.crm.contacts.columns["modified_at"]] = self._local(datetime.now(UTC))
        self._update_contact(connection, action, mapped)
        return None

    def _update_crm_email(self, connection: sa.Connection, action: CrmAction) -> str | None:
        current = self._current_contact(connection, action)
        email_column = self.crm.contacts.columns["email"]
        if _same(current.get(email_column), action.email_address):
            return "already"
        self._check_contact(current, action)
        now = datetime.now(UTC)
        values = self._mapped("contacts", {"email": action.email_address, "modified_at": self._local(now)})
        # duplicate contacts of the list share the person's address, so they move with it: a
        # duplicate left at the former address would be transmitted as a new member
        moved = [(action.crm_contact_id, current[email_column])]
        moved += self._list_duplicates(connection, action.crm_list_id, action.crm_contact_id, current[email_column])
        table = self._table("contacts")
        for contact_id, former in moved:
            connection.execute(
                table.update()
                .where(self._col("contacts", "contact_id") == self._id_value("contacts", contact_id))
                .values(dict(values))
            )
            self.statements += 1
            if self.crm.email_history is not None:
                history = self._table("email_history")
                row = {"contact_id": self._id_value("contacts", contact_id), "email": former}
                row["valid_to"] = self._local(now)
                connection.execute(history.insert().values(self._mapped("email_history", row)))
                self.statements += 1
        return None

    def _list_duplicates(
        self, connection: sa.Connection, crm_list_id: str, crm_contact_id: str | None, address: Any
    ) -> list[tuple[str | None, Any]]:
        """The other contacts assigned to the list whose address has the same key, with their
        address."""
        if not isinstance(address, str) or not address.strip():
            return []
        key = try_email_key(address).key
        if key is None:
            return []
        contact_id = self._col("contacts", "contact_id")
        email = self._col("contacts", "email")
        assigned = sa.select(self._col("assignments", "contact_id")).where(
            self._col("assignments", "list_id") == crm_list_id
        )
        query = sa.select(contact_id, email).where(
            sa.func.lower(sa.func.trim(email)) == address.strip().lower(),
            contact_id != self._id_value("contacts", crm_contact_id),
            contact_id.in_(assigned),
        )
        return [(str(row[0]), row[1]) for row in connection.execute(query) if try_email_key(row[1]).key == key]

    def _record_consent(self, connection: sa.Connection, action: CrmAction) -> str | None:
        if self.crm.consents is None:
            raise NotWritable("crm.consents is not mapped: map a consent table to record consent")
        if action.crm_contact_id is None:
            raise NotWritable("record_consent needs a CRM contact; this address has none")
        self._insert_consent(connection, action, action.crm_contact_id, "decided")
        return None

    # ------------------------------------------------------------------ helpers

    def _table(self, entity: str) -> sa.Table:
        if entity not in self._tables:
            mapping: TableMapping | None = getattr(self.crm, entity)
            if mapping is None:
                raise NotWritable(f"crm.{entity} is not mapped")
            self._tables[entity] = _reflect(self.engine, entity, mapping)
        return self._tables[entity]

    def _col(self, entity: str, name: str) -> sa.Column[Any]:
        mapping: TableMapping = getattr(self.crm, entity)
        return self._table(entity).c[mapping.columns[name]]

    def _mapped(self, entity: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical field → value, as CRM column → value; fields the CRM does not map are left out."""
        mapping: TableMapping = getattr(self.crm, entity)
        return {mapping.columns[name]: value for name, value in values.items() if name in mapping.columns}

    def _id_value(self, entity: str, value: str | None) -> Any:
        """An id as the CRM column holds it (ids are text in the warehouse)."""
        column = self._col(entity, "contact_id")
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            return value
        return python_type(value) if value is not None and python_type is int else value

    def _assignment_key(self, table: sa.Table, contact_id: str | None, list_id: str) -> tuple[Any, ...]:
        columns = self.crm.assignments.columns
        return (
            table.c[columns["contact_id"]] == self._id_value("assignments", contact_id),
            table.c[columns["list_id"]] == list_id,
        )

    def _assignment_row(self, connection: sa.Connection, contact_id: str | None, list_id: str) -> dict[str, Any] | None:
        table = self._table("assignments")
        query = sa.select(table).where(*self._assignment_key(table, contact_id, list_id))
        if connection.dialect.name != "sqlite":
            query = query.with_for_update()
        row = connection.execute(query).mappings().first()
        if row is None:
            return None
        by_field = {name: row[column] for name, column in self.crm.assignments.columns.items()}
        return by_field

    def _current_assignment(self, connection: sa.Connection, action: CrmAction) -> dict[str, Any] | None:
        return self._assignment_row(connection, action.crm_contact_id, action.crm_list_id)

    def _check_assignment(self, current: Mapping[str, Any], action: CrmAction) -> None:
        if action.extracted_status_value is None:
            raise StaleRow("the sync saw no assignment, the CRM has one now")
        changed_at = _as_utc(current.get("status_changed_at"), self.zone)
        if current["status"] != action.extracted_status_value or not _same_time(
            changed_at, action.extracted_status_changed_at
        ):
            raise StaleRow(
                f"the CRM status changed since the sync: now {current['status']!r} "
                f"({changed_at.isoformat() if changed_at else 'no time'}), "
                f"the sync saw {action.extracted_status_value!r}"
            )

    def _status_value(self, action: CrmAction) -> str:
        if action.target_status is None:
            raise NotWritable(f"{action.action} takes the ESP's status, and the ESP has no member for this address")
        return self.crm.status_value(action.target_status)

    def _status_values(self, action: CrmAction, target: str) -> dict[str, Any]:
        changed_at = action.status_time or datetime.now(UTC)
        return {"status": target, "status_changed_at": self._local(changed_at), "status_set_by": action.set_by}

    def _update_assignment(self, connection: sa.Connection, action: CrmAction, values: Mapping[str, Any]) -> None:
        table = self._table("assignments")
        connection.execute(
            table.update()
            .where(*self._assignment_key(table, action.crm_contact_id, action.crm_list_id))
            .values(self._mapped("assignments", values))
        )
        self.statements += 1

    def _insert_assignment(self, connection: sa.Connection, action: CrmAction, contact_id: str) -> str | None:
        target = self._status_value(action)
        current = self._assignment_row(connection, contact_id, action.crm_list_id)
        if current is not None:
            if current["status"] == target:
                return "already"
            raise StaleRow(f"the CRM has this assignment now, with status {current['status']!r}")
        values = self._status_values(action, target)
        values |= {
            "contact_id": self._id_value("assignments", contact_id),
            "list_id": action.crm_list_id,
            "needs_review": True,
        }
        connection.execute(self._table("assignments").insert().values(self._mapped("assignments", values)))
        self.statements += 1
        if action.target_status == "subscribed":
            self._insert_consent(connection, action, contact_id, "esp_opt_in")
        return None

    def _consent_if_opt_in(self, connection: sa.Connection, action: CrmAction) -> None:
        if action.target_status == "subscribed" and action.crm_contact_id is not None:
            self._insert_consent(connection, action, action.crm_contact_id, "esp_opt_in")

    def _insert_consent(self, connection: sa.Connection, action: CrmAction, contact_id: str, kind: str) -> None:
        if self.crm.consents is None:
            return
        given_at = action.status_time or datetime.now(UTC)
        row = {
            "contact_id": self._id_value("consents", contact_id),
            "list_id": action.crm_list_id,
            "email": action.email_address,
            "given_at": self._local(given_at),
            "kind": kind,
            "source": action.set_by,
            "note": action.note,
        }
        connection.execute(self._table("consents").insert().values(self._mapped("consents", row)))
        self.statements += 1

    def _mark_address_bounced(self, connection: sa.Connection, action: CrmAction) -> None:
        if "email_bounced_at" not in self.crm.contacts.columns:
            return
        when = action.esp_status_changed_at or datetime.now(UTC)
        self._update_contact(connection, action, self._mapped("contacts", {"email_bounced_at": self._local(when)}))

    def _current_contact(self, connection: sa.Connection, action: CrmAction) -> dict[str, Any]:
        if action.crm_contact_id is None:
            raise NotWritable(f"{action.action} needs a CRM contact; this address has none")
        table = self._table("contacts")
        query = sa.select(table).where(
            self._col("contacts", "contact_id") == self._id_value("contacts", action.crm_contact_id)
        )
        if connection.dialect.name != "sqlite":
            query = query.with_for_update()
        row = connection.execute(query).mappings().first()
        if row is None:
            raise StaleRow("the contact was removed from the CRM since the sync")
        return dict(row)

    def _check_contact(self, current: Mapping[str, Any], action: CrmAction) -> None:
        for name in CONTACT_CHECK_FIELDS:
            column = self.crm.contacts.columns.get(name)
            if column is None or name not in action.extracted_contact:
                continue
            now, then = current.get(column), action.extracted_contact[name]
            same = (
                _same_time(_as_utc(now, self.zone), then)
                if name == "modified_at"
                else _text(now, trim=name != "email") == _text(then, trim=name != "email")
            )
            if not same:
                raise StaleRow(f"the contact's {name} changed in the CRM since the sync")

    def _update_contact(self, connection: sa.Connection, action: CrmAction, values: Mapping[str, Any]) -> None:
        table = self._table("contacts")
        connection.execute(
            table.update()
            .where(self._col("contacts", "contact_id") == self._id_value("contacts", action.crm_contact_id))
            .values(dict(values))
        )
        self.statements += 1

    def _new_contact_id(self, connection: sa.Connection) -> Any:
        """An id for a new contact: the database's own when it assigns one, else the next
        integer, else a generated text id."""
        column = self._col("contacts", "contact_id")
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            python_type = str
        assigns = column.server_default is not None or (
            column.autoincrement is True and connection.dialect.name == "mysql"
        )
        if python_type is int and connection.dialect.name == "sqlite" and column.primary_key:
            assigns = True  # an INTEGER PRIMARY KEY is SQLite's rowid
        if assigns:
            return None
        if python_type is int:
            highest = connection.execute(sa.select(sa.func.max(column))).scalar()
            return (highest or 0) + 1
        return f"mailbridge-{uuid.uuid4().hex[:16]}"

    def _local(self, value: datetime) -> datetime:
        """A time as the CRM stores it: naive, in the CRM's configured time zone."""
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(self.zone).replace(tzinfo=None)


def _real_sqlite_transactions(engine: sa.Engine) -> None:
    """pysqlite starts a transaction only at the first write, so a savepoint before it is a
    transaction of its own, committed (and synced) on release. Let SQLAlchemy begin it: then
    a chunk is one transaction and each action's savepoint is cheap."""

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def _text(value: Any, *, trim: bool) -> str | None:
    if value is None:
        return None
    text = str(value)
    return (text.strip() or None) if trim else text


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(current, datetime) or isinstance(wanted, datetime):
        return bool(current == wanted)
    return _text(current, trim=True) == _text(wanted, trim=True)


def _same_time(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.astimezone(UTC) == b.astimezone(UTC)


def _typed(value: Any, mapping: FieldMapping) -> Any:
    """A mapped field's ESP value in the CRM column's type."""
    if value is None or value == "":
        return None
    text = str(value)
    try:
        if mapping.type == "integer":
            return int(Decimal(text))
        if mapping.type == "decimal":
            return Decimal(text)
        if mapping.type == "boolean":
            return text.strip().lower() in ("true", "1", "yes", "y")
        if mapping.type == "datetime":
            return datetime.fromisoformat(text)
    except (ArithmeticError, ValueError) as error:
        raise NotWritable(f"field {mapping.name}: {text!r} is not a {mapping.type}") from error
    return text
