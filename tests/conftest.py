"""Shared fixtures: scenarios by name, emulators on ephemeral ports, project configs in tmp dirs."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from sandbox.mailchimp.app import MailchimpEmulator
from sandbox.scenario import Scenario, load_scenario
from sandbox.server import BackgroundServer

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "fixtures" / "scenarios"

os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees another's warehouse, config or Dagster instance through the environment."""
    for variable in ("MAILBRIDGE_WAREHOUSE", "MAILBRIDGE_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir(exist_ok=True)


def shared_dbt_target(tmp_path: Path) -> Path:
    """One dbt target folder for every build of this test worker (`tmp_path` is one of its test
    folders), so tests leave no target each behind. A worker runs one test at a time, so no two
    builds write the folder at once."""
    return tmp_path.parent / "dbt_target"


def scenario_named(name: str) -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.yaml")


@pytest.fixture
def small_scenario() -> Scenario:
    return scenario_named("small")


class RunningEmulator:
    def __init__(self, emulator: MailchimpEmulator, server: BackgroundServer) -> None:
        self.emulator = emulator
        self.server = server
        self.base_url = f"{server.url}/3.0"

    @property
    def state(self) -> Any:
        return self.emulator.state


def start_mailchimp(scenario: Scenario, **fault_settings: Any) -> RunningEmulator:
    """A Mailchimp emulator of `scenario` in this process, on its own ephemeral port."""
    from sandbox.faults import FaultSettings

    emulator = MailchimpEmulator.from_scenario(scenario, FaultSettings(**fault_settings))
    return RunningEmulator(emulator, BackgroundServer(emulator.app).start())


@pytest.fixture
def serve_mailchimp() -> Iterator[Any]:
    """Start Mailchimp emulators in this process; each on its own ephemeral port."""
    running: list[RunningEmulator] = []

    def start(scenario: Scenario, **fault_settings: Any) -> RunningEmulator:
        running.append(start_mailchimp(scenario, **fault_settings))
        return running[-1]

    yield start
    for emulator in running:
        emulator.server.stop()


# what a sync leaves in a world's folder: the CRM, the warehouse and dlt's pipeline state
SYNCED_FILES = ("crm.sqlite", "warehouse.duckdb", "dlt")


def copy_synced_world(template: Path, folder: Path) -> None:
    """The synced state of `template`, a world of the same scenario, copied into `folder`: a test
    copies it in a fraction of a second instead of extracting and building again (about 15 s).
    A sync only reads the ESP, so a fresh emulator of the scenario is the one it read."""
    for name in SYNCED_FILES:
        source, copy = template / name, folder / name
        if source.is_dir():
            shutil.copytree(source, copy)
        else:
            shutil.copy2(source, copy)


def write_project_config(
    folder: Path,
    *,
    base_url: str | None,
    crm_url: str,
    accounts: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A mailbridge.yaml like the demo's, pointed at a test emulator, CRM and warehouse."""
    raw = yaml.safe_load((REPO_ROOT / "mailbridge.yaml").read_text("utf-8"))
    if accounts is not None:
        raw["esp_accounts"] = [a for a in raw["esp_accounts"] if a["name"] in accounts]
        raw["list_links"] = [link for link in raw["list_links"] if link["esp_account"] in accounts]
    for account in raw["esp_accounts"]:
        if base_url is None:
            account.pop("base_url", None)
        else:
            account["base_url"] = base_url
    raw["crm"]["url"] = crm_url
    raw["warehouse"] = str(folder / "warehouse.duckdb")
    for key, value in (overrides or {}).items():
        raw[key] = value
    path = folder / "mailbridge.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), "utf-8")
    return path


@pytest.fixture
def sandbox_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo config's key variables, set to the sandbox accounts' keys."""
    from sandbox.generator import ACCOUNTS

    env = {"brand_main": "MAILBRIDGE_MAILCHIMP_MAIN_KEY", "brand_shop": "MAILBRIDGE_MAILCHIMP_SHOP_KEY"}
    for account in ACCOUNTS:
        monkeypatch.setenv(env[account.name], account.api_key)


POSTGRES_URL = os.environ.get("MAILBRIDGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("MAILBRIDGE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _server_url(base: str, name: str) -> str:
    """`base` with its database (MariaDB) or search path (PostgreSQL) set to `name`."""
    url = sa.engine.make_url(base)
    if url.get_backend_name() == "postgresql":
        return url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def crm_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A CRM database: a SQLite file, and the machine's real PostgreSQL and MariaDB servers,
    each test in a schema (PostgreSQL) or database (MariaDB) of its own, dropped after it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crm.sqlite'}"
        return
    base = POSTGRES_URL if request.param == "postgresql" else MARIADB_URL
    name = f"mb_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    statement = "schema" if request.param == "postgresql" else "database"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"create {statement} {name}"))
        yield _server_url(base, name)
    finally:
        with admin.connect() as connection:
            drop = f"drop schema {name} cascade" if request.param == "postgresql" else f"drop database {name}"
            connection.execute(sa.text(drop))
        admin.dispose()


def crm_query(url: str, query: str) -> list[dict[str, Any]]:
    """The rows of one query against a CRM database, as dicts."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row) for row in connection.execute(sa.text(query)).mappings()]
    finally:
        engine.dispose()
