"""`mailbridge explain EMAIL`: both sides' data, the result, the rule and the address's history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailbridge.email_key import try_email_key

# what each rule of fct_list_reconciliation means, in one sentence
RULES: dict[str, str] = {
    "extraction_incomplete": "The list's latest ESP read did not complete, so nothing is decided or pushed for it.",
    "invalid_address": "The CRM address is not valid syntax; it is reported and never sent to an ESP.",
    "blocklisted": "The address (or its domain) is on the CRM blocklist: never transmitted, unsubscribed at the ESP.",
    "email_changed_in_crm": "The CRM contact's address changed; the ESP still has the former one: "
    "unsubscribe the former address and subscribe the new one.",
    "email_changed_at_esp": "The address changed at the ESP; the CRM still has the former one: "
    "the CRM takes the new one.",
    "esp_optout_newer": "The ESP's opt-out (or bounce) is newer than the CRM's subscribe (or as new): "
    "the CRM takes it.",
    "esp_subscribe_newer": "The ESP's subscribe is newer than the CRM's opt-out: the CRM takes it.",
    "esp_confirmed_crm_pending": "The ESP has the double opt-in confirmed that the CRM still waits for.",
    "esp_status_newer": "Both sides agree the person gets no mail; the ESP's newer status goes to the CRM.",
    "crm_optout_newer": "The CRM's opt-out is newer than the ESP's subscribe (or as new): it goes to the ESP. "
    "Opt-outs always propagate.",
    "crm_subscribe_newer": "The CRM's subscribe is newer than the ESP's opt-out. A subscribe never overrides an "
    "opt-out: only a new double opt-in can bring the person back.",
    "doi_pending_within_grace": "The ESP waits for the double opt-in confirmation; within the grace period "
    "that is no conflict.",
    "doi_pending_past_grace": "The ESP has waited for the double opt-in confirmation longer than the grace period.",
    "both_agree": "Both sides agree on status, names, salutation and mapped fields.",
    "fields_differ": "Names, salutation or mapped fields differ, and policy leaves at least one to a decision.",
    "fields_differ_crm_wins": "Fields differ and policy says the CRM wins them: the ESP gets the CRM's values.",
    "fields_differ_esp_wins": "Fields differ and policy says the ESP wins them: the CRM gets the ESP's values.",
    "archived_at_esp_only": "The ESP archived the member and the CRM has no assignment: nothing to do.",
    "former_address_retired": "A CRM contact used this address before it changed; the ESP no longer mails it.",
    "former_address_still_subscribed": (
        "A CRM contact used this address before it changed, and the ESP still mails it: unsubscribe it."
    ),
    "former_address_opted_out_at_esp": (
        "The CRM contact's former address opted out at the ESP after the contact's subscribe (another "
        "contact still holds it): the opt-out reaches the contact, the new address is not transmitted."
    ),
    "esp_member_crm_contact": "The ESP has the member; the CRM knows the contact but not in this list.",
    "esp_member_unknown_to_crm": "The ESP has the member; no CRM contact has this address.",
    "crm_subscribed_unknown_to_esp": "The CRM has a subscribed assignment the ESP does not know.",
    "crm_pending_unknown_to_esp": "The CRM waits for a double opt-in the ESP does not know: start it.",
    "crm_not_subscribed_unknown_to_esp": "The CRM's assignment is not subscribed and the ESP does not know it: "
    "nothing to do.",
}


def _rows(db: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    try:
        cursor = db.execute(sql, params)
    except duckdb.CatalogException:
        return [], []
    return [column[0] for column in cursor.description], cursor.fetchall()


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # warehouse values are CRM and ESP data: shown as written, never read as markup
        table.add_row(*("" if value is None else escape(str(value)) for value in row))
    return table


def explain_address(warehouse: Path, address: str, console: Console) -> bool:
    """Print what mailbridge knows about one address; False when it knows nothing."""
    result = try_email_key(address)
    if result.key is None:
        console.print(f"[yellow]{escape(repr(address))} is not a valid address:[/yellow] {escape(str(result.error))}")
    key = result.key
    console.print(f"[bold]{escape(address)}[/bold] → email key [cyan]{escape(key or '(none)')}[/cyan]")
    found = False
    with duckdb.connect(str(warehouse), read_only=True) as db:
        where_key = "email_key = ?" if key else "lower(trim(email_address)) = lower(trim(?))"
        param = [key or address]
        sections = [
            (
                "CRM contacts",
                f"select crm_contact_id, email_address, first_name, last_name, salutation, custom_fields, "
                f"email_error from staging.stg_crm__contacts where {where_key}",
            ),
            (
                "CRM list assignments",
                f"select crm_list_id, crm_contact_id, status, crm_status_value, status_changed_at, status_set_by, "
                f"crm_task from intermediate.int_crm__memberships where {where_key} order by crm_list_id",
            ),
            (
                "CRM contacts that had this address before",
                "select crm_contact_id, changed_at, history_source from intermediate.int_crm__address_history "
                "where former_email_key = ?",
            ),
            (
                "ESP memberships",
                f"select esp_type, esp_account, esp_list_id, esp_member_id, status, esp_status, status_changed_at, "
                f"first_name, last_name, salutation, opted_in_at, opt_in_ip from intermediate.int_esp__memberships "
                f"where {where_key} order by esp_account, esp_list_id",
            ),
            (
                "Reconciliation",
                "select list_link_id, result, rule, crm_contact_id, crm_status, esp_status, resolved_status, "
                "recommended_action, conflict_fields, former_email_key, warnings, run_id "
                f"from marts.fct_list_reconciliation where {where_key} or former_email_key = ? "
                "order by list_link_id",
            ),
            (
                "Event log",
                "select logged_at, run_id, severity, code, list_link_id, message, detail "
                f"from marts.fct_sync_event_log where {where_key} order by logged_at, list_link_id",
            ),
        ]
        rules: set[str] = set()
        # an invalid address has no key: only the tables that keep the raw address can tell
        keyless = {"CRM contacts", "CRM list assignments", "ESP memberships", "Reconciliation"}
        for title, sql in sections:
            if key is None and title not in keyless:
                continue
            params = param * sql.count("?")
            columns, rows = _rows(db, sql, params)
            if not rows:
                continue
            found = True
            console.print(_table(title, columns, rows))
            if title == "Reconciliation":
                rules |= {row[columns.index("rule")] for row in rows}
        for rule in sorted(rules):
            console.print(f"[bold]{escape(str(rule))}[/bold]: {escape(RULES.get(rule, ''))}")
    if not found:
        console.print("Neither side knows this address, and the event log has nothing on it.")
    return found
