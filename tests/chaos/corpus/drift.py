"""Schema drift: a CRM column added, dropped or retyped, a new ESP member field. The sync either
keeps working or stops with a clear error naming the column; never a traceback, never silently
wrong data, and a stopped run leaves the last good load in place."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import duckdb
import sqlalchemy as sa

SMALL_CONTACTS = {"1", "2", "3", "4"}


def _small_crm(folder: Path, field_mappings: list[dict[str, Any]] | None = None) -> tuple[Any, str]:
    from mailbridge.config import load_config
    from sandbox.crm_db import write_crm
    from tests.conftest import scenario_named, write_project_config

    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 'crm.sqlite'}"
    overrides = {"field_mappings": field_mappings} if field_mappings else None
    config = load_config(write_project_config(folder, base_url=None, crm_url=url, overrides=overrides))
    write_crm(scenario_named("small").tables, url, config.crm)
    return config, url


def _execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def _extract(config: Any, name: str = "crm") -> str | None:
    """Run one extraction; None when it loaded, else what a user is told (the innermost cause's
    last line, as `mailbridge sync` prints it)."""
    from pipelines.runner import extraction_named

    try:
        run = extraction_named(config, name, full_refresh=True, run_id="drift")
        run.pipeline.run(run.source)
    except Exception as error:  # the message a user would see is what the check judges
        cause: BaseException = error
        while cause.__cause__ is not None:  # as `mailbridge sync` reports a failed step
            cause = cause.__cause__
        lines = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {lines[-1] if lines else ''}"
    return None


def _query(config: Any, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(config.warehouse_path()), read_only=True) as db:
        return db.execute(sql).fetchall()


def new_crm_column(folder: Path) -> str | None:
    """A column the mapping does not name is ignored: the load is what it was."""
    config, url = _small_crm(folder)
    _execute(
        url,
        "alter table kontakte add column lieblingsfarbe text",
        "update kontakte set lieblingsfarbe = '=1+1' || char(0)",
        "alter table verteiler_zuordnungen add column kanal integer",
    )
    failure = _extract(config)
    if failure is not None:
        return f"a new CRM column stopped the sync: {failure}"
    contacts = {row[0] for row in _query(config, "select contact_id from raw_crm.contacts")}
    rejected = _query(config, "select field, reason from raw_crm.rejected_rows")
    columns = {row[0] for row in _query(config, "describe raw_crm.contacts")}
    if contacts != SMALL_CONTACTS or rejected:
        return f"a new CRM column changed the load: contacts {sorted(contacts)}, rejected {rejected}"
    if "lieblingsfarbe" in columns:
        return "an unmapped CRM column reached the warehouse"
    return None


def _stops_naming(folder: Path, drop: Callable[[str], list[str]], *names: str, mappings: Any = None) -> str | None:
    """A mapped column dropped after a good load: the next run stops naming it, and the last
    good load stays in place."""
    config, url = _small_crm(folder, mappings)
    if mappings:
        _execute(url, "alter table kontakte add column kundennummer integer", "update kontakte set kundennummer = 7")
    first = _extract(config)
    if first is not None:
        return f"the load before the drift failed: {first}"
    _execute(url, *drop(url))
    failure = _extract(config)
    if failure is None:
        return "a dropped mapped column was not noticed"
    missing = [name for name in names if name not in failure]
    if missing or "Traceback" in failure:
        return f"the error does not name {missing}: {failure}"
    contacts = {row[0] for row in _query(config, "select contact_id from raw_crm.contacts")}
    if contacts != SMALL_CONTACTS:
        return f"the stopped run did not leave the last good load in place: {sorted(contacts)}"
    return None


def dropped_crm_column(folder: Path) -> str | None:
    return _stops_naming(
        folder,
        lambda url: ["alter table kontakte drop column anrede"],
        "crm.contacts.columns.salutation",
        "'anrede'",
    )


def dropped_mapped_field_column(folder: Path) -> str | None:
    mappings = [{"name": "customer_number", "crm_column": "kundennummer", "esp_field": "KDNR", "type": "integer"}]
    return _stops_naming(
        folder,
        lambda url: ["alter table kontakte drop column kundennummer"],
        "field_mappings[customer_number].crm_column",
        "'kundennummer'",
        mappings=mappings,
    )


def dropped_crm_table(folder: Path) -> str | None:
    return _stops_naming(folder, lambda url: ["drop table sperrliste"], "crm.blocklist.table", "'sperrliste'")


def retyped_crm_columns(folder: Path) -> str | None:
    """Ids that became text, a status time that became an epoch number: the ids load as they
    are, the times are rejected values, and every opt-out stays."""
    config, url = _small_crm(folder)
    _execute(
        url,
        "update verteiler_zuordnungen set status = 'abgemeldet'",
        "alter table verteiler_zuordnungen rename to zuordnungen_alt",
        "create table verteiler_zuordnungen (kontakt_id text, verteiler_id text, status text, "
        "status_datum integer, status_gesetzt_von text, aufgabe text, zu_pruefen boolean)",
        "insert into verteiler_zuordnungen select 'K-' || kontakt_id, verteiler_id, status, 1700000000, "
        "status_gesetzt_von, aufgabe, zu_pruefen from zuordnungen_alt",
        "drop table zuordnungen_alt",
    )
    failure = _extract(config)
    if failure is not None:
        return f"a retyped CRM column stopped the sync: {failure}"
    assignments = _query(
        config, "select contact_id, status, status_changed_at from raw_crm.assignments order by contact_id"
    )
    rejected = _query(
        config, "select row_key, field from raw_crm.rejected_rows where entity = 'assignments' order by row_key"
    )
    expected = [(f"K-{number}", "unsubscribed", None) for number in (1, 2, 4)]
    if assignments != expected:
        return f"retyped columns loaded as {assignments}, expected {expected}"
    if rejected != [(f"K-{number}/NL", "status_changed_at") for number in (1, 2, 4)]:
        return f"the retyped status times were not reported: {rejected}"
    return None


@contextmanager
def _small_emulator() -> Iterator[str]:
    from sandbox.mailchimp.app import MailchimpEmulator
    from sandbox.server import BackgroundServer
    from tests.conftest import scenario_named

    scenario = scenario_named("small")
    server = BackgroundServer(MailchimpEmulator.from_scenario(scenario).app).start()
    (account,) = [account for account in scenario.accounts if account.name == "brand_main"]
    previous = os.environ.get("MAILBRIDGE_MAILCHIMP_MAIN_KEY")
    os.environ["MAILBRIDGE_MAILCHIMP_MAIN_KEY"] = account.api_key
    try:
        yield f"{server.url}/3.0"
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("MAILBRIDGE_MAILCHIMP_MAIN_KEY", None)
        else:
            os.environ["MAILBRIDGE_MAILCHIMP_MAIN_KEY"] = previous


def new_esp_member_field(folder: Path) -> str | None:
    """Mailchimp adds a member field and an audience adds a merge field: the members load as
    before, the new merge field carried in merge_fields, the new member field ignored."""
    from mailbridge.config import load_config
    from sandbox.mailchimp import store
    from tests.conftest import write_project_config

    original = store.member_json  # every member answer, whether the member is a row or an object

    def with_new_fields(*fields: Any) -> dict[str, Any]:
        answer = original(*fields)
        answer["sms_phone_number"] = "+49 30 1234567"
        answer["consents_to_one_to_one_messaging"] = True
        answer["merge_fields"] = {**answer["merge_fields"], "GEBURTSTAG": "05/17"}
        return answer

    folder.mkdir(parents=True, exist_ok=True)
    with _small_emulator() as base_url, mock.patch.object(store, "member_json", with_new_fields):
        config = load_config(
            write_project_config(folder, base_url=base_url, crm_url="sqlite:///unused.sqlite", accounts=["brand_main"])
        )
        failure = _extract(config, "mailchimp")
    if failure is not None:
        return f"a new ESP member field stopped the sync: {failure}"
    members = _query(config, "select email_key, status, merge_fields from raw_mailchimp.members order by email_key")
    if len(members) != 4 or any(status != "subscribed" for _, status, _ in members):
        return f"the members did not load as before: {members}"
    if any(json.loads(fields).get("GEBURTSTAG") != "05/17" for _, _, fields in members):
        return "the new merge field was not carried"
    return None


DRIFT_CASES: dict[str, Callable[[Path], str | None]] = {
    "new_crm_column": new_crm_column,
    "dropped_crm_column": dropped_crm_column,
    "dropped_mapped_field_column": dropped_mapped_field_column,
    "dropped_crm_table": dropped_crm_table,
    "retyped_crm_columns": retyped_crm_columns,
    "new_esp_member_field": new_esp_member_field,
}


def drift_outcomes(folder: Path) -> dict[str, str | None]:
    return {name: check(folder / name) for name, check in DRIFT_CASES.items()}
