"""mailbridge.yaml: validated once, with errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge.config import ConfigError, _is_database_url, load_config
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


def config_error(tmp_path: Path, mutate: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, mutate))
    return str(caught.value)


def test_credentials_in_an_esp_base_url_are_refused_without_echoing_them(tmp_path: Path) -> None:
    for userinfo in ("mailbridge:0123456789abcdef-us1@", "0123456789abcdef-us1@"):

        def mutate(raw: dict, userinfo: str = userinfo) -> None:  # type: ignore[type-arg]
            raw["esp_accounts"][1]["base_url"] = f"http://{userinfo}127.0.0.1:8421/3.0"

        message = config_error(tmp_path, mutate)
        assert "esp_accounts[1].base_url" in message and "api_key_env" in message
        assert "0123456789abcdef" not in message


def test_a_base_url_that_is_not_http_is_refused(tmp_path: Path) -> None:
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/3.0", "127.0.0.1:8421/3.0", "http:///3.0"):

        def mutate(raw: dict, url: str = url) -> None:  # type: ignore[type-arg]
            raw["esp_accounts"][0]["base_url"] = url

        message = config_error(tmp_path, mutate)
        assert "esp_accounts[0].base_url" in message and "http" in message, message


def test_a_password_in_a_literal_crm_url_is_refused(tmp_path: Path) -> None:
    for url in (
        "postgresql+psycopg://crm:Geheim-42@db.example.com/crm",
        "postgresql+psycopg://crm@db.example.com/crm?password=Geheim-42",
    ):

        def mutate(raw: dict, url: str = url) -> None:  # type: ignore[type-arg]
            raw["crm"]["url"] = url

        message = config_error(tmp_path, mutate)
        assert "crm.url" in message and "crm.url_env" in message
        assert "Geheim-42" not in message

    # a user without a password (trust or peer authentication) is fine
    def user_only(raw: dict) -> None:  # type: ignore[type-arg]
        raw["crm"]["url"] = "postgresql+psycopg://crm@db.example.com/crm"

    assert load_config(write(tmp_path, user_only)).crm.url == "postgresql+psycopg://crm@db.example.com/crm"


def test_a_crm_url_from_the_environment_that_is_no_url_is_named_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        del raw["crm"]["url"]
        raw["crm"]["url_env"] = "MAILBRIDGE_TEST_CRM_URL"

    config = load_config(write(tmp_path, mutate))
    monkeypatch.setenv("MAILBRIDGE_TEST_CRM_URL", "postgresql//crm:Geheim-42@db.example.com/crm")
    with pytest.raises(ConfigError) as caught:
        config.crm.connection_url(config.base_dir)
    assert "crm.url_env" in str(caught.value) and "MAILBRIDGE_TEST_CRM_URL" in str(caught.value)
    assert "Geheim-42" not in str(caught.value)


def test_loading_the_config_imports_neither_dlt_nor_sqlalchemy() -> None:
    """Every command loads the config first: `mailbridge status` or `explain` need neither."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from mailbridge.config import load_config\n"
        "load_config()\n"
        "print(json.dumps([name for name in ('dlt', 'sqlalchemy', 'duckdb') if name in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


# the pieces a database URL is made of, and the characters its pattern splits on
URL_PIECE = st.text(alphabet="ab+_-.:@/?[]=&% 09é\t", max_size=8)
URL_LIKE = st.builds(
    lambda scheme, user, host, port, rest: f"{scheme}://{user}{host}{port}{rest}",
    st.sampled_from(["sqlite", "postgresql+psycopg", "mysql+pymysql", "my_db", "", "a-b", "é"]),
    st.sampled_from(["", "crm@", "crm:secret@", ":@", "@"]),
    st.sampled_from(["", "db.example.com", "[::1]", "[", "127.0.0.1"]),
    st.sampled_from(["", ":", ":5432", ":x", ": 1", ":+1", ":1_000", ":99999999999"]),
    URL_PIECE,
)


@settings(max_examples=500)
@given(st.one_of(URL_LIKE, URL_PIECE, st.text(max_size=30)))
def test_the_crm_url_check_answers_as_sqlalchemy_does(url: str) -> None:
    """The config reads URLs without SQLAlchemy (importing it slows every command): its check
    must accept exactly what SQLAlchemy's make_url reads."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
        sqlalchemy_reads = True
    except (ArgumentError, ValueError):
        sqlalchemy_reads = False
    assert _is_database_url(url) == sqlalchemy_reads


def test_two_links_on_one_esp_list_are_refused(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["list_links"][1]["esp_list_id"] = raw["list_links"][0]["esp_list_id"]

    message = config_error(tmp_path, mutate)
    assert "list_links[1].esp_list_id" in message
    assert "newsletter_main" in message and "nl0001" in message and "brand_main" in message


def test_the_same_esp_list_id_in_two_accounts_is_fine(tmp_path: Path) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["list_links"][2]["esp_list_id"] = raw["list_links"][0]["esp_list_id"]

    assert len(load_config(write(tmp_path, mutate)).list_links) == 3


def test_empty_status_values_are_refused(tmp_path: Path) -> None:
    def empty(raw: dict) -> None:  # type: ignore[type-arg]
        raw["crm"]["status_values"] = {}

    assert "crm.status_values" in config_error(tmp_path, empty)

    def no_opt_out(raw: dict) -> None:  # type: ignore[type-arg]
        raw["crm"]["status_values"] = {"angemeldet": "subscribed"}

    message = config_error(tmp_path, no_opt_out)
    assert "crm.status_values" in message and "unsubscribed" in message


def test_empty_list_ids_are_refused(tmp_path: Path) -> None:
    for field, value in (("crm_list_id", ""), ("esp_list_id", ""), ("crm_list_id", "  ")):

        def mutate(raw: dict, field: str = field, value: str = value) -> None:  # type: ignore[type-arg]
            raw["list_links"][2][field] = value

        assert f"list_links[2].{field}" in config_error(tmp_path, mutate)


def test_a_bad_or_empty_timezone_names_the_key(tmp_path: Path) -> None:
    for zone in ("Europe/Berln", "", "Europe", "../etc/passwd"):

        def mutate(raw: dict, zone: str = zone) -> None:  # type: ignore[type-arg]
            raw["crm"]["timezone"] = zone

        message = config_error(tmp_path, mutate)
        assert "crm.timezone" in message and "Europe/Berlin" in message, message

    def berlin(raw: dict) -> None:  # type: ignore[type-arg]
        raw["crm"]["timezone"] = "Europe/Berlin"

    assert load_config(write(tmp_path, berlin)).crm.timezone == "Europe/Berlin"


def test_a_warehouse_that_is_a_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()

    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["warehouse"] = "data"

    message = config_error(tmp_path, mutate)
    assert "warehouse" in message and str(tmp_path / "data") in message and "directory" in message

    (tmp_path / "a_file").write_text("", "utf-8")
    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(tmp_path / "a_file" / "warehouse.duckdb"))
    message = config_error(tmp_path, lambda raw: None)
    assert "MAILBRIDGE_WAREHOUSE" in message and "a_file" in message


def test_missing_environment_is_named_per_key_before_any_extraction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        del raw["crm"]["url"]
        raw["crm"]["url_env"] = "MAILBRIDGE_TEST_CRM_URL"

    config = load_config(write(tmp_path, mutate))
    for variable in ("MAILBRIDGE_TEST_CRM_URL", "MAILBRIDGE_MAILCHIMP_MAIN_KEY", "MAILBRIDGE_MAILCHIMP_SHOP_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError) as caught:
        config.check_environment()
    message = str(caught.value)
    assert "crm.url_env" in message and "MAILBRIDGE_TEST_CRM_URL" in message
    assert "'brand_main'" in message and "MAILBRIDGE_MAILCHIMP_MAIN_KEY" in message
    assert "'brand_shop'" in message and "MAILBRIDGE_MAILCHIMP_SHOP_KEY" in message

    monkeypatch.setenv("MAILBRIDGE_TEST_CRM_URL", "sqlite:///crm.sqlite")
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_MAIN_KEY", "k-us1")
    monkeypatch.setenv("MAILBRIDGE_MAILCHIMP_SHOP_KEY", "k-us1")
    config.check_environment()


def test_a_yaml_error_quotes_its_line_without_the_password(tmp_path: Path) -> None:
    path = tmp_path / "mailbridge.yaml"
    path.write_text('crm:\n  url: "postgresql://crm:Geheim-42@db/crm\n  timezone: [\n', "utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "not valid YAML" in str(caught.value) and "postgresql://crm:***@db/crm" in str(caught.value)
    assert "Geheim-42" not in str(caught.value)


def test_duckdb_limits_bound_the_load_and_a_bad_one_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.runner import make_pipeline

    monkeypatch.setenv("MAILBRIDGE_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("MAILBRIDGE_DUCKDB_MEMORY_LIMIT", "700MB")
    monkeypatch.setenv("MAILBRIDGE_DUCKDB_THREADS", "1")
    config = load_config(write(tmp_path, lambda raw: None))
    pipeline = make_pipeline(config, "limits", "raw_limits")
    with pipeline.sql_client() as client:
        ((memory_limit, threads),) = client.execute_sql(
            "select current_setting('memory_limit'), current_setting('threads')"
        )
    assert (memory_limit, threads) == ("667.5 MiB", 1)
    for variable, value, words in (
        ("MAILBRIDGE_DUCKDB_MEMORY_LIMIT", "lots", "is not a memory size"),
        ("MAILBRIDGE_DUCKDB_THREADS", "0", "is not a number of threads"),
        ("MAILBRIDGE_DBT_THREADS", "two", "is not a number of threads"),
    ):
        monkeypatch.setenv(variable, value)
        with pytest.raises(ConfigError, match=f"{variable} \\(environment\\): '{value}' {words}"):
            load_config(write(tmp_path, lambda raw: None))
        monkeypatch.delenv(variable)
