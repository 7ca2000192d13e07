"""The demo generator: deterministic worlds whose expected counts follow from their cases."""

from __future__ import annotations

from pathlib import Path

from sandbox.generator import CASE_RESULTS, CASE_WEIGHTS, generate_scenario
from sandbox.scenario import load_scenario


def test_same_seed_same_world() -> None:
    first, second = generate_scenario(contacts=300, seed=8), generate_scenario(contacts=300, seed=8)
    assert first.expected == second.expected
    for name in first.tables:
        assert first.table(name).equals(second.table(name))
    assert generate_scenario(contacts=300, seed=9).expected != first.expected


def test_every_case_has_a_result_and_the_drift_is_present() -> None:
    assert set(CASE_WEIGHTS) <= set(CASE_RESULTS)
    scenario = generate_scenario(contacts=5000, seed=1)
    results = {result for counts in scenario.expected.values() for result in counts}
    assert {"in_sync", "new_in_list", "new_contact", "not_in_esp", "conflict", "blocked", "invalid_email"} <= results
    members = scenario.table("esp_members")
    assert set(members["status"].unique()) >= {"subscribed", "unsubscribed", "cleaned", "pending"}
    contacts = scenario.table("crm_contacts")
    assert contacts["email"].str.to_lowercase().n_unique() < contacts.height  # duplicates
    assert contacts["email"].str.contains("[A-Z]").any()  # mixed case
    assert contacts["email"].str.contains("ü|ä|ß").any()  # IDN domains
    assert scenario.table("crm_email_history").height > 0  # address changes
    activity = scenario.table("esp_activity")
    assert set(activity["bounce_type"].drop_nulls().unique()) == {"hard", "soft"}
    assert scenario.table("crm_blocklist").height > 0


def test_a_saved_world_loads_back_unchanged(tmp_path: Path) -> None:
    scenario = generate_scenario(contacts=200, seed=4)
    loaded = load_scenario(scenario.save(tmp_path / "world"))
    assert loaded.expected == scenario.expected
    assert loaded.accounts == scenario.accounts and loaded.links == scenario.links
    for name in scenario.tables:
        assert loaded.table(name).equals(scenario.table(name))


def test_designed_duplicates_share_the_original_key_at_scale() -> None:
    """A duplicate CRM record must normalise to its original's key, even for IDN domains with ß."""
    import polars as pl

    from mailbridge.email_key import email_keys

    contacts = 100_000
    scenario = generate_scenario(contacts=contacts, seed=42)
    table = scenario.table("crm_contacts")
    keys, _ = email_keys(table["email"].to_list())
    keyed = table.with_columns(pl.Series("key", keys.to_pylist()))
    originals = keyed.filter(pl.col("contact_id") <= contacts)
    duplicates = keyed.filter(pl.col("contact_id") > contacts)
    assert duplicates.height > 0
    assert duplicates.join(originals, on="key", how="anti").height == 0
    assert originals.filter(pl.col("key").is_not_null())["key"].is_duplicated().sum() == 0
