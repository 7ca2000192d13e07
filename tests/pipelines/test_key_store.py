"""Email keys kept from one sync to the next: the same results, and no address judged twice."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from mailbridge import email_key, key_store
from mailbridge.config import load_config
from mailbridge.email_key import email_keys
from mailbridge.key_store import KEEP_DAYS, KeyStore, kept_keys
from pipelines.runner import extraction_named, key_store_dir, run_extraction
from sandbox.crm_db import write_crm
from sandbox.generator import generate_scenario
from tests.conftest import write_project_config

ADDRESSES = [
    "Jürgen.Müller@Beispiel.de",
    "anna@xn--mller-kva.de",
    "kein-at-zeichen.de",
    "a\u200bb@beispiel.de",
    "plain.ascii@beispiel.de",
    "Ömer@straße.de",
    None,
]


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The addresses the validator is asked about (the in-process cache cleared first)."""
    asked: list[str] = []
    judge = email_key.try_email_key
    judge.cache_clear()

    def counting(address: str | None) -> email_key.EmailKeyResult:
        asked.append(address)  # type: ignore[arg-type]
        return judge.__wrapped__(address)

    monkeypatch.setattr(email_key, "try_email_key", counting)
    return asked


def keys_of(addresses: list[str | None]) -> tuple[list[str | None], list[str | None]]:
    keys, errors = email_keys(pa.array(addresses, type=pa.string()))
    return keys.to_pylist(), errors.to_pylist()


def test_kept_results_are_the_validators_and_spare_the_next_sync_judging_them(
    tmp_path: Path, judged: list[str]
) -> None:
    fresh = keys_of(ADDRESSES)
    assert len(judged) == 6  # all but the plain ASCII address took the slow path (None too)
    judged.clear()
    with kept_keys(tmp_path) as store:
        assert keys_of(ADDRESSES) == fresh
    assert len(store) == 5  # the slow path's addresses; a missing one needs no judging
    judged.clear()
    with kept_keys(tmp_path):
        assert keys_of(ADDRESSES) == fresh
        assert keys_of(["neu.jürgen@beispiel.de"])[0] == ["neu.jürgen@beispiel.de"]
    assert judged == [None, "neu.jürgen@beispiel.de"]
    # outside a sync nothing is kept or read
    judged.clear()
    assert keys_of(ADDRESSES) == fresh
    assert len(judged) == 6


def test_results_of_other_rules_are_not_read_and_their_file_goes(
    tmp_path: Path, judged: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with kept_keys(tmp_path):
        keys_of(ADDRESSES)
    [old] = list(tmp_path.glob("email-keys-*.parquet"))
    monkeypatch.setattr(key_store, "rules_fingerprint", lambda: "0123456789abcdef")
    judged.clear()
    with kept_keys(tmp_path):
        keys_of(ADDRESSES)
    assert len(judged) == 6
    assert [path.name for path in tmp_path.glob("email-keys-*.parquet")] == ["email-keys-0123456789abcdef.parquet"]
    assert not old.exists()


def test_a_file_that_cannot_be_read_is_passed_over_and_written_anew(
    tmp_path: Path, judged: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = KeyStore(tmp_path).path
    path.write_bytes(b"not parquet")
    with caplog.at_level(logging.WARNING), kept_keys(tmp_path):
        assert keys_of(ADDRESSES)[0][0] == "jürgen.müller@beispiel.de"
    assert "cannot be read" in caplog.text
    store = KeyStore(tmp_path)
    store.load()
    assert len(store) == 5


def test_an_address_no_sync_asked_for_in_keep_days_is_dropped(tmp_path: Path) -> None:
    today = date(2026, 11, 25)
    old = KeyStore(tmp_path, today=today - timedelta(days=KEEP_DAYS + 1))
    old["alt@beispiel.de"] = email_key.EmailKeyResult("alt@beispiel.de", None)
    old["noch@beispiel.de"] = email_key.EmailKeyResult("noch@beispiel.de", None)
    old.save()
    now = KeyStore(tmp_path, today=today)
    now.load()
    assert now.get("noch@beispiel.de") is not None
    now["neu@beispiel.de"] = email_key.EmailKeyResult("neu@beispiel.de", None)
    now.save()
    later = KeyStore(tmp_path, today=today)
    later.load()
    assert sorted(later.kept) == ["neu@beispiel.de", "noch@beispiel.de"]


def test_a_crm_extraction_keeps_its_keys_for_the_next(tmp_path: Path, judged: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    config = load_config(write_project_config(tmp_path, base_url=None, crm_url=url))
    write_crm(generate_scenario(contacts=300, seed=3).tables, url, config.crm)
    first = extraction_named(config, "crm", full_refresh=True, run_id="first")
    run_extraction(first)
    assert judged, "the generated CRM has addresses only the validator can judge"
    assert any(key_store_dir(first.pipeline).glob("email-keys-*.parquet"))
    judged.clear()
    run_extraction(extraction_named(config, "crm", full_refresh=True, run_id="second"))
    assert [address for address in judged if address is not None] == []
