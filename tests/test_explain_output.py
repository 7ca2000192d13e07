"""`mailbridge explain` shows addresses and warehouse values as written, never as Rich markup."""

from __future__ import annotations

from pathlib import Path

import duckdb
from rich.console import Console

from mailbridge.explain import explain_address


def test_markup_in_an_address_and_in_crm_data_is_shown_as_written(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as db:
        db.execute("create schema staging")
        db.execute(
            "create table staging.stg_crm__contacts as select '7' as crm_contact_id, "
            "'anna@beispiel.de' as email_address, '[/bold]Anna' as first_name, '[red]Schmidt' as last_name, "
            "null as salutation, null as custom_fields, null as email_error, 'anna@beispiel.de' as email_key"
        )
    console = Console(record=True, width=200)
    assert explain_address(warehouse, "anna@beispiel.de", console)
    assert explain_address(warehouse, "[/bold]@[x]", console) is False
    text = console.export_text()
    assert "[/bold]Anna" in text and "[red]Schmidt" in text
    assert "'[/bold]@[x]' is not a valid address" in text
