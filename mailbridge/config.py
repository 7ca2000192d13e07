"""The project configuration: one validated model, loaded from mailbridge.yaml."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailbridge.urls import masked_url, url_has_password, url_has_userinfo
from mailbridge.warehouse_lock import DEFAULT_WAIT_SECONDS

DEFAULT_CONFIG_FILE = "mailbridge.yaml"
CONFIG_ENV = "MAILBRIDGE_CONFIG"
WAREHOUSE_ENV = "MAILBRIDGE_WAREHOUSE"

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
CANONICAL_STATUSES = (
    "subscribed",
    "unsubscribed",
    "pending",
    "bounced_hard",
    "bounced_soft",
    "bounced",
    "archived",
)


# actions a CRM user can ask for in the assignment's task column
TASK_ACTIONS = ("transmit", "start_doi", "unsubscribe", "update_fields", "delete", "set_status")


# a CRM table or column name: letters (any script), digits, _ and $, words joined by one space
# or hyphen, at most 63 characters (PostgreSQL's limit, the lowest of the supported CRMs).
# Names are always quoted in SQL; this keeps quotes, semicolons, comment markers and invisible
# characters out of the mapping altogether, so a typo or a pasted statement is refused early
SQL_NAME = re.compile(r"[\w$]+(?:[ -][\w$]+)*")
SQL_NAME_MAX_LENGTH = 63


def check_sql_name(value: str) -> str:
    """`value` if it is a usable CRM table or column name; else ValueError saying why."""
    if not SQL_NAME.fullmatch(value) or len(value) > SQL_NAME_MAX_LENGTH:
        raise ValueError(
            f"{value!r} is not a table or column name mailbridge accepts: use letters, digits, _ and $, "
            f"words joined by one space or hyphen, at most {SQL_NAME_MAX_LENGTH} characters "
            "(no quotes, semicolons, comments or invisible characters)"
        )
    return value


SqlName = Annotated[str, AfterValidator(check_sql_name)]


class ConfigError(Exception):
    """The configuration is missing or wrong; the message names the file, the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EspAccount(_Strict):
    """One account at one ESP; several accounts of one ESP are allowed."""

    name: Identifier
    type: str
    api_key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    base_url: str | None = None
    max_connections: int = Field(default=10, ge=1, le=10)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from pipelines.registry import esp_types

        if value not in esp_types():
            raise ValueError(f"unknown ESP type {value!r}; known types: {', '.join(esp_types())}")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url_without_credentials(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
        except ValueError:
            usable = False
        if not usable:
            raise ValueError(
                f"{masked_url(value)!r} is not an http:// or https:// URL with a host; give the API's address "
                "(like https://us19.api.mailchimp.com/3.0), or drop base_url for the ESP's own"
            )
        if url_has_userinfo(value):
            raise ValueError(
                "credentials in base_url are refused (they would be printed and stored): remove the 'user:key@' "
                "part and export the key in the environment variable named by api_key_env"
            )
        return value

    def api_key(self) -> str:
        """The account's API key, read from its environment variable."""
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"ESP account {self.name!r}: the environment variable {self.api_key_env} is not set. "
                f"Export the account's API key as {self.api_key_env} (never write it into mailbridge.yaml)."
            )
        return key


class ListLink(_Strict):
    """A CRM distribution list linked to one list of one ESP account."""

    id: Identifier
    crm_list_id: str
    esp_account: Identifier
    esp_list_id: str

    @field_validator("crm_list_id", "esp_list_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an empty list id links nothing; give the list's id")
        return value


class TableMapping(_Strict):
    """Where one CRM entity lives: its table and the column behind each canonical field."""

    table: SqlName
    columns: dict[str, SqlName]


class CrmConfig(_Strict):
    """The CRM database and how its tables map onto mailbridge's vocabulary."""

    url: str | None = None
    url_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timezone: str = "UTC"
    contacts: TableMapping
    lists: TableMapping
    assignments: TableMapping
    blocklist: TableMapping | None = None
    email_history: TableMapping | None = None
    # where write-back records consent (an opt-in confirmed at the ESP); optional
    consents: TableMapping | None = None
    # where the push writes each recipient's reaction to each mailing (delivered, bounced,
    # opened, clicked, with times); optional
    mailing_reactions: TableMapping | None = None
    # false for a CRM mailbridge may only read: its changes then go out by `mailbridge export`
    write_back: bool = True
    status_values: dict[str, Literal[CANONICAL_STATUSES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {status: status for status in CANONICAL_STATUSES}
    )
    # the CRM's own task words on an assignment (as its users set them), each mapped to an action
    task_values: dict[str, Literal[TASK_ACTIONS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {action: action for action in TASK_ACTIONS}
    )

    REQUIRED_COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "contacts": ("contact_id", "email"),
        "lists": ("list_id", "name"),
        "assignments": ("contact_id", "list_id", "status", "status_changed_at"),
        "blocklist": ("email",),
        "email_history": ("contact_id", "email", "valid_to"),
        "consents": ("contact_id", "given_at"),
        "mailing_reactions": ("contact_id", "mailing_id"),
    }
    # optional columns; write-back fills needs_review, email_bounced_at and the consent details
    OPTIONAL_COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "contacts": ("first_name", "last_name", "salutation", "modified_at", "needs_review", "email_bounced_at"),
        "lists": (),
        "assignments": ("status_set_by", "task", "needs_review"),
        "blocklist": ("blocked_at", "reason"),
        "email_history": ("valid_from",),
        "consents": ("list_id", "email", "kind", "source", "note"),
        "mailing_reactions": (
            "mailing_name",
            "sent_at",
            "delivered",
            "bounce",
            "opened",
            "clicked",
            "opens",
            "clicks",
            "first_open_at",
            "first_click_at",
            "unsubscribed",
            "updated_at",
        ),
    }

    @field_validator("url")
    @classmethod
    def _no_secret_in_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if url_has_password(value):
            raise ValueError(
                "a password in crm.url is refused (secrets never go into mailbridge.yaml): export the whole URL "
                "in an environment variable and name that variable in crm.url_env instead of crm.url"
            )
        if not _is_database_url(value):
            raise ValueError(
                "not a database URL SQLAlchemy reads; write it as dialect+driver://user@host/database "
                "(or sqlite:///path/to/file.sqlite)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception:  # unknown key (KeyError), malformed key (ValueError), a folder of zones (OSError)
            raise ValueError(
                f"{value!r} is not a time zone; give an IANA name such as 'Europe/Berlin' or 'UTC'"
            ) from None
        return value

    @field_validator("status_values")
    @classmethod
    def _opt_in_and_opt_out_mapped(cls, value: dict[str, str]) -> dict[str, str]:
        missing = [status for status in ("subscribed", "unsubscribed") if status not in value.values()]
        if missing:
            raise ValueError(
                f"no CRM word is mapped to {' or '.join(missing)}; map the CRM's own words to canonical statuses, "
                "like {angemeldet: subscribed, abgemeldet: unsubscribed} (a status word left unmapped keeps its "
                "rows out of the sync)"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> CrmConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of crm.url (no secrets in it) or crm.url_env")
        for entity, required in self.REQUIRED_COLUMNS.items():
            mapping = getattr(self, entity)
            if mapping is None:
                continue
            missing = [column for column in required if column not in mapping.columns]
            if missing:
                raise ValueError(f"crm.{entity}.columns must map {', '.join(missing)}")
            known = required + self.OPTIONAL_COLUMNS[entity]
            unknown = [field for field in mapping.columns if field not in known]
            if unknown:
                raise ValueError(
                    f"crm.{entity}.columns: unknown field {unknown[0]!r}; known fields: {', '.join(known)}"
                )
        return self

    def status_value(self, canonical: str) -> str:
        """The CRM's own word for a canonical status (the first one mapped to it)."""
        for crm_value, mapped in self.status_values.items():
            if mapped == canonical:
                return crm_value
        raise ConfigError(
            f"crm.status_values has no CRM value for the status {canonical!r}; add one so mailbridge can write it"
        )

    def connection_url(self, base_dir: Path) -> str:
        """The SQLAlchemy URL; relative SQLite paths are taken from the config file's folder."""
        if self.url_env is not None:
            url = os.environ.get(self.url_env, "").strip()
            if not url:
                raise ConfigError(
                    f"crm.url_env: the environment variable {self.url_env} is not set. "
                    f"Export the CRM's SQLAlchemy URL as {self.url_env}."
                )
            if not _is_database_url(url):
                raise ConfigError(
                    f"crm.url_env: the value of {self.url_env} is not a database URL SQLAlchemy reads. "
                    "Export it as dialect+driver://user:password@host/database."
                )
        else:
            assert self.url is not None
            url = self.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            url = prefix + str((base_dir / url[len(prefix) :]).resolve())
        return url


# SQLAlchemy's URL pattern (`sqlalchemy.engine.url._parse_url`), so that loading the config does
# not import SQLAlchemy: a tenth of a second of every command and of the Dagster code location.
# tests/test_config.py holds it to SQLAlchemy's answers
_DATABASE_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def _is_database_url(url: str) -> bool:
    """Whether SQLAlchemy's `make_url` reads `url`: its pattern matches, and a port, even an
    empty one (`host:`), is a number."""
    match = _DATABASE_URL.match(url)
    if match is None:
        return False
    port = match.group("port")
    if port is not None:
        try:
            int(port)
        except ValueError:
            return False
    return True


STANDARD_FIELDS = ("first_name", "last_name", "salutation")
FieldWinner = Literal["crm", "esp", "manual"]


class FieldMapping(_Strict):
    """A custom CRM contact column mapped to an ESP attribute (Mailchimp: a merge tag)."""

    name: Identifier
    crm_column: SqlName
    esp_field: str
    type: Literal["text", "integer", "decimal", "boolean", "datetime"] = "text"


class Policy(_Strict):
    """How reconciliation settles what the rules leave open.

    Opt-out propagation is not a switch: an opt-out newer than the other side's subscribe
    always propagates, in both directions.
    """

    transmit_new_members: bool = False
    doi_grace_period_days: int = Field(default=14, ge=0)
    email_change_is_consent: bool = False
    field_winners: dict[str, FieldWinner] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _opt_outs_always_propagate(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if "opt_out" in key or "unsubscribe" in key:
                    raise ValueError(f"{key}: opt-outs always propagate and cannot be switched off; remove the key")
        return data

    def winner(self, field: str) -> str:
        return self.field_winners.get(field, "manual")


class GatingSettings(_Strict):
    """When mailbridge refuses to act on the warehouse's picture of the lists."""

    # a push needs a reconciliation at most this old
    push_max_age_minutes: int = Field(default=60, ge=1)
    # a campaign send needs its list reconciled at most this long ago
    send_max_age_minutes: int = Field(default=30, ge=1)


class ExtractionSettings(_Strict):
    page_size: int = Field(default=1000, ge=1, le=1000)
    max_retries: int = Field(default=6, ge=0, le=20)
    backoff_seconds: float = Field(default=0.5, ge=0)
    max_retry_after_seconds: float = Field(default=60, ge=0)
    timeout_seconds: float = Field(default=60, gt=0)
    # unsubscribes and abuse reports of a campaign (which come for weeks) are read on every run
    # until this many days after its send, once more after that, and then only by a full sync
    report_window_days: float = Field(default=30, ge=0)
    # the same for sent-to, whose recipients are fixed by the send and whose delivery status
    # settles within days; later bounces and opens come through the email activity
    sent_to_window_days: float = Field(default=3, ge=0)
    # email activity is read again this far back from each campaign's cursor: events the ESP
    # reports late, dated before the last read, are not missed (the merge keeps each once)
    activity_reread_minutes: float = Field(default=60, ge=0)
    # a campaign whose report counts no new open, click or bounce since its last complete email
    # activity read is not read again, except once this many hours after that read (0: every run)
    activity_recheck_hours: float = Field(default=24, ge=0)


class MailbridgeConfig(_Strict):
    esp_accounts: list[EspAccount]
    list_links: list[ListLink]
    crm: CrmConfig
    field_mappings: list[FieldMapping] = Field(default_factory=list)
    policy: Policy = Policy()
    extraction: ExtractionSettings = ExtractionSettings()
    gating: GatingSettings = GatingSettings()
    warehouse: str = ".mailbridge/warehouse.duckdb"
    # how long a command waits for the warehouse while another one writes it
    warehouse_wait_seconds: float = Field(default=DEFAULT_WAIT_SECONDS, ge=0)

    # set by load_config, not by the file
    base_dir: Path = Field(default=Path("."), exclude=True)
    source_file: Path = Field(default=Path(DEFAULT_CONFIG_FILE), exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> MailbridgeConfig:
        names = [account.name for account in self.esp_accounts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"esp_accounts: account names must be unique, repeated: {', '.join(duplicates)}")
        link_ids = [link.id for link in self.list_links]
        duplicates = sorted({link for link in link_ids if link_ids.count(link) > 1})
        if duplicates:
            raise ValueError(f"list_links: ids must be unique, repeated: {', '.join(duplicates)}")
        linked: dict[tuple[str, str], int] = {}
        for index, link in enumerate(self.list_links):
            if link.esp_account not in names:
                raise ValueError(
                    f"list_links[{index}].esp_account: no ESP account named {link.esp_account!r}; "
                    f"configured accounts: {', '.join(names) or 'none'}"
                )
            first = linked.setdefault((link.esp_account, link.esp_list_id), index)
            if first != index:
                raise ValueError(
                    f"list_links[{index}].esp_list_id: list {link.esp_list_id!r} of {link.esp_account!r} is linked "
                    f"already by list_links[{first}] ({self.list_links[first].id}); link each ESP list once"
                )
        fields = [*STANDARD_FIELDS, *(mapping.name for mapping in self.field_mappings)]
        if len(set(fields)) != len(fields):
            raise ValueError(f"field_mappings: names must be unique and not one of {', '.join(STANDARD_FIELDS)}")
        unknown = sorted(set(self.policy.field_winners) - set(fields))
        if unknown:
            raise ValueError(f"policy.field_winners: unknown field {unknown[0]!r}; fields are {', '.join(fields)}")
        return self

    def check_environment(self) -> None:
        """Every environment variable a sync reads is set (the CRM URL's, each account's key); checked
        before anything is extracted, so a missing one costs nothing and names the key to fix."""
        problems = []
        try:
            self.crm.connection_url(self.base_dir)
        except ConfigError as error:
            problems.append(str(error))
        for index, account in enumerate(self.esp_accounts):
            try:
                account.api_key()
            except ConfigError as error:
                problems.append(f"esp_accounts[{index}].api_key_env: {error}")
        if problems:
            raise ConfigError("\n".join(problems))

    def account(self, name: str) -> EspAccount:
        for account in self.esp_accounts:
            if account.name == name:
                return account
        raise KeyError(name)

    def accounts_of_type(self, esp_type: str) -> list[EspAccount]:
        return [account for account in self.esp_accounts if account.type == esp_type]

    def links_of_account(self, name: str) -> list[ListLink]:
        return [link for link in self.list_links if link.esp_account == name]

    def warehouse_path(self) -> Path:
        """The DuckDB file: MAILBRIDGE_WAREHOUSE wins, else `warehouse` beside the config file."""
        configured = os.environ.get(WAREHOUSE_ENV) or self.warehouse
        path = Path(configured)
        return path if path.is_absolute() else (self.base_dir / path).resolve()


def config_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_config(path: str | Path | None = None) -> MailbridgeConfig:
    """Read and validate the project config; errors name the file, the key and the fix."""
    file = config_path(path).resolve()
    if not file.is_file():
        raise ConfigError(
            f"{file}: no such config file. Create it (see README.md, 'Configuration') or point {CONFIG_ENV} at it."
        )
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        # PyYAML quotes the offending line, which may hold a URL
        raise ConfigError(f"{file}: not valid YAML: {masked_url(str(error))}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level")
    try:
        config = MailbridgeConfig.model_validate(raw)
    except ValidationError as error:
        lines = [f"{file}: {_location(e['loc'])}: {e['msg']}" for e in error.errors()]
        raise ConfigError("invalid configuration\n  " + "\n  ".join(lines)) from None
    config = config.model_copy(update={"base_dir": file.parent, "source_file": file})
    _check_warehouse(config)
    return config


MEMORY_LIMIT_ENV = "MAILBRIDGE_DUCKDB_MEMORY_LIMIT"
THREADS_ENV = "MAILBRIDGE_DUCKDB_THREADS"
# dbt models built side by side (dbt_project/profiles.yml reads it; default 1)
DBT_THREADS_ENV = "MAILBRIDGE_DBT_THREADS"
# what the load (dlt) and the models (dbt) may take of DuckDB: with the Python around it, a
# process stays within about 2 GiB; DuckDB spills what does not fit to a temporary folder
DEFAULT_MEMORY_LIMIT = "1GB"
DEFAULT_THREADS = 2
MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)", re.IGNORECASE)


def duckdb_settings() -> dict[str, Any]:
    """DuckDB's `memory_limit` and `threads` for the load and the models, from
    MAILBRIDGE_DUCKDB_MEMORY_LIMIT (like 1GB, 512MiB) and MAILBRIDGE_DUCKDB_THREADS. The number
    of dbt models built side by side, MAILBRIDGE_DBT_THREADS, is checked here too (the dbt
    profile reads it)."""
    memory_limit = os.environ.get(MEMORY_LIMIT_ENV, "").strip() or DEFAULT_MEMORY_LIMIT
    if not MEMORY_SIZE.fullmatch(memory_limit):
        raise ConfigError(
            f"{MEMORY_LIMIT_ENV} (environment): {memory_limit!r} is not a memory size; write it like 1GB or 512MiB"
        )
    threads_text = os.environ.get(THREADS_ENV, "").strip() or str(DEFAULT_THREADS)
    if not threads_text.isdigit() or int(threads_text) < 1:
        raise ConfigError(f"{THREADS_ENV} (environment): {threads_text!r} is not a number of threads (1 or more)")
    dbt_threads = os.environ.get(DBT_THREADS_ENV, "").strip() or "1"
    if not dbt_threads.isdigit() or int(dbt_threads) < 1:
        raise ConfigError(f"{DBT_THREADS_ENV} (environment): {dbt_threads!r} is not a number of threads (1 or more)")
    return {"memory_limit": memory_limit, "threads": int(threads_text)}


def _check_warehouse(config: MailbridgeConfig) -> None:
    """The warehouse must be a file that exists or can be created; a folder is never taken for it."""
    duckdb_settings()
    path = config.warehouse_path()
    key = f"{WAREHOUSE_ENV} (environment)" if os.environ.get(WAREHOUSE_ENV) else f"{config.source_file}: warehouse"
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a directory; name the DuckDB file in it, like {path / 'warehouse.duckdb'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{key}: {parent} is a file, not a directory, so {path} cannot be created")
            return
