"""mailbridge.yaml: validated once, with errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mailbridge.config import ConfigError, load_config
from tests.conftest import REPO_ROOT


def write(tmp_path: Path, mutate: object) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))
    mutate(raw)  # type: ignore[operator]
    path = tmp_path / "mailbridge.yaml"
    path.write_text(yaml.safe_dump(raw), "utf-8")
    return path


def test_the_demo_config_is_valid() -> None:
    config = load_config(REPO_ROOT / "mailbridge.yaml")
    assert [a.name for a in config.esp_accounts] == ["brand_main", "brand_shop"]
    assert {a.type for a in config.esp_accounts} == {"mailchimp"}
    assert config.policy.transmit_new_members is False
    assert config.crm.status_values["abgemeldet"] == "unsubscribed"
    assert config.warehouse_path().is_absolute()


def test_relative_sqlite_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, lambda raw: None))
    assert config.crm.connection_url(config.base_dir) == f"sqlite:///{tmp_path / '.mailbridge/demo/crm.sqlite'}"


def test_a_link_to_an_unknown_account_names_the_key(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["list_links"][1]["esp_account"] = "brand_nowhere"

    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, mutate))
    message = str(caught.value)
    assert str(tmp_path / "mailbridge.yaml") in message
    assert "list_links[1].esp_account" in message and "brand_nowhere" in message and "brand_main" in message


def test_an_unknown_esp_type_lists_the_known_ones(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["esp_accounts"][0]["type"] = "mailchump"

    with pytest.raises(ConfigError, match=r"esp_accounts\[0\]\.type.*mailchump.*known types: mailchimp"):
        load_config(write(tmp_path, mutate))


def test_a_key_in_the_file_is_refused(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["esp_accounts"][0]["api_key"] = "0123456789abcdef0123456789abcdef-us1"

    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, mutate))
    assert "esp_accounts[0].api_key" in str(caught.value)
    assert "0123456789abcdef" not in str(caught.value)


def test_several_accounts_of_one_esp_and_unique_names(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["esp_accounts"][1]["name"] = "brand_main"
        raw["list_links"] = raw["list_links"][:2]

    with pytest.raises(ConfigError, match="account names must be unique, repeated: brand_main"):
        load_config(write(tmp_path, mutate))


def test_more_than_ten_connections_is_refused(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["esp_accounts"][0]["max_connections"] = 20

    with pytest.raises(ConfigError, match=r"esp_accounts\[0\]\.max_connections"):
        load_config(write(tmp_path, mutate))


def test_unmapped_canonical_status_is_refused(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["crm"]["status_values"]["angemeldet"] = "subscribd"

    with pytest.raises(ConfigError, match=r"crm\.status_values\.angemeldet"):
        load_config(write(tmp_path, mutate))


def test_missing_key_variable_names_account_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", raising=False)
    config = load_config(REPO_ROOT / "mailbridge.yaml")
    with pytest.raises(ConfigError, match=r"'brand_main'.*MAILBRIDGE_MAILCHIMP_MAIN_KEY is not set"):
        config.account("brand_main").api_key()


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such config file.*MAILBRIDGE_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_crm_url_needs_exactly_one_source(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["crm"]["url_env"] = "CRM_URL"

    with pytest.raises(ConfigError, match=r"exactly one of crm\.url"):
        load_config(write(tmp_path, mutate))


def test_opt_out_propagation_cannot_be_switched_off(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["policy"]["propagate_opt_outs"] = False

    with pytest.raises(ConfigError, match=r"policy.*propagate_opt_outs: opt-outs always propagate"):
        load_config(write(tmp_path, mutate))


def test_field_winners_name_known_fields(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["field_mappings"] = [
            {"name": "customer_number", "crm_column": "kdnr", "esp_field": "KDNR", "type": "integer"}
        ]
        raw["policy"]["field_winners"] = {"first_name": "crm", "customer_number": "esp", "salutation": "manual"}

    config = load_config(write(tmp_path, mutate))
    assert config.policy.winner("first_name") == "crm"
    assert config.policy.winner("last_name") == "manual"

    def unknown(raw: dict) -> None:  # type: ignore[type-arg]
        raw["policy"]["field_winners"] = {"nickname": "crm"}

    with pytest.raises(ConfigError, match=r"policy.field_winners: unknown field 'nickname'"):
        load_config(write(tmp_path, unknown))

    def wrong_winner(raw: dict) -> None:  # type: ignore[type-arg]
        raw["policy"]["field_winners"] = {"first_name": "whoever"}

    with pytest.raises(ConfigError, match=r"policy.field_winners.first_name"):
        load_config(write(tmp_path, wrong_winner))
