"""The `mailbridge` command on bad input: a message that names the key and the fix, no traceback,
no secret, nothing written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

SECRET_VARIABLES = ("MAILBRIDGE_MAILCHIMP_MAIN_KEY", "MAILBRIDGE_MAILCHIMP_SHOP_KEY", "MAILBRIDGE_TEST_CRM_URL")


def mailbridge(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if key not in SECRET_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "mailbridge.cli", *args],
        cwd=REPO_ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def project(tmp_path: Path, mutate: Any = None) -> Path:
    """The demo config with its warehouse in tmp_path, changed by `mutate`."""
    raw = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))
    raw["warehouse"] = str(tmp_path / "mb" / "warehouse.duckdb")
    raw["crm"]["url"] = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    if mutate is not None:
        mutate(raw)
    path = tmp_path / "mailbridge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), "utf-8")
    return path


def assert_clean(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "MarkupError" not in output, output
    return output


def test_rich_markup_in_a_config_key_is_printed_as_written(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["crm"]["[/bold]"] = "x"
        raw["crm"]["[red]colour[/red]"] = "y"

    result = mailbridge("status", "-c", str(project(tmp_path, mutate)))
    output = assert_clean(result)
    assert result.returncode == 2
    assert "crm.[/bold]" in output and "crm.[red]colour[/red]" in output


def test_pattern_messages_keep_their_brackets(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["esp_accounts"][0]["name"] = "Brand-Main"

    result = mailbridge("status", "-c", str(project(tmp_path, mutate)))
    output = assert_clean(result)
    assert result.returncode == 2
    assert "esp_accounts[0].name" in output and "^[a-z][a-z0-9_]{0,62}$" in output


def test_an_unset_crm_url_variable_is_named_before_any_extraction(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        del raw["crm"]["url"]
        raw["crm"]["url_env"] = "MAILBRIDGE_TEST_CRM_URL"

    config = project(tmp_path, mutate)
    for command in (("sync", "--full"), ("load-crm", str(REPO_ROOT / "tests/fixtures/scenarios/small.yaml"))):
        result = mailbridge(*command, "-c", str(config), env={"DAGSTER_HOME": str(tmp_path / "dagster")})
        output = assert_clean(result)
        assert result.returncode == 2, output
        assert "crm.url_env" in output and "MAILBRIDGE_TEST_CRM_URL" in output
    assert not (tmp_path / "mb" / "warehouse.duckdb").exists()
    assert not (tmp_path / "dagster").exists()


def test_an_unset_api_key_is_named_before_any_extraction(tmp_path: Path) -> None:
    result = mailbridge("sync", "--full", "-c", str(project(tmp_path)), env={"DAGSTER_HOME": str(tmp_path / "dagster")})
    output = assert_clean(result)
    assert result.returncode == 2, output
    assert "'brand_main'" in output and "MAILBRIDGE_MAILCHIMP_MAIN_KEY" in output
    assert "'brand_shop'" in output and "MAILBRIDGE_MAILCHIMP_SHOP_KEY" in output
    assert not (tmp_path / "mb" / "warehouse.duckdb").exists()


def test_a_warehouse_that_is_a_directory_is_named_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "warehouse_folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine", "utf-8")

    def mutate(raw: dict[str, Any]) -> None:
        raw["warehouse"] = str(folder)

    config = project(tmp_path, mutate)
    for command in (("status",), ("demo", "--contacts", "20")):
        result = mailbridge(*command, "-c", str(config), env={"DAGSTER_HOME": str(tmp_path / "dagster")})
        output = assert_clean(result)
        assert result.returncode == 2, output
        assert "warehouse" in output and "directory" in output
        assert (folder / "keep.txt").read_text("utf-8") == "mine"


def test_a_bad_timezone_is_named(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["crm"]["timezone"] = "Europe/Berln"

    result = mailbridge("status", "-c", str(project(tmp_path, mutate)))
    output = assert_clean(result)
    assert result.returncode == 2 and "crm.timezone" in output and "Europe/Berln" in output


def test_credentials_in_a_base_url_are_refused_and_never_printed(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["esp_accounts"][0]["base_url"] = "http://mailbridge:d0d0cafe-us1@127.0.0.1:8421/3.0"

    result = mailbridge("status", "-c", str(project(tmp_path, mutate)))
    output = assert_clean(result)
    assert result.returncode == 2 and "esp_accounts[0].base_url" in output
    assert "d0d0cafe" not in output


def test_demo_with_its_sandbox_port_taken_names_what_to_change(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def mutate(raw: dict[str, Any]) -> None:
            for account in raw["esp_accounts"]:
                account["base_url"] = f"http://127.0.0.1:{port}/3.0"

        result = mailbridge(
            "demo", "--contacts", "20", "-c", str(project(tmp_path, mutate)), env={"DAGSTER_HOME": str(tmp_path / "d")}
        )
    output = assert_clean(result)
    assert result.returncode == 1, output
    assert f"port {port} is already in use" in output
    assert "--port" not in output and "base_url" in output
