"""Build the dlt pipelines and sources for a configuration; run an extraction without Dagster."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.sources import DltSource

from mailbridge.config import MailbridgeConfig, duckdb_settings
from pipelines.crm import crm_source
from pipelines.registry import connector
from pipelines.settings_source import settings_source

LOG = logging.getLogger(__name__)

CRM_DATASET = "raw_crm"
SETTINGS_DATASET = "raw_mailbridge"


def state_dir(config: MailbridgeConfig) -> Path:
    """Where mailbridge keeps local state (dlt pipelines) beside the warehouse file."""
    return config.warehouse_path().parent


def key_store_dir(pipeline: dlt.Pipeline) -> Path:
    """Where the email keys of earlier syncs are kept (`mailbridge.key_store`): beside the
    warehouse, with dlt's pipelines."""
    return Path(pipeline.pipelines_dir).parent / "email_keys"


def make_pipeline(config: MailbridgeConfig, name: str, dataset: str) -> dlt.Pipeline:
    warehouse = config.warehouse_path()
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    # DuckDB's memory and threads bounded as for the models (MAILBRIDGE_DUCKDB_*)
    credentials = DuckDbCredentials(global_config=duckdb_settings())
    # the path set as a field: given to the constructor, dlt imports DuckDB to tell it from a
    # connection, and the Dagster code location, which builds the pipelines, would load it
    credentials.database = str(warehouse)
    return dlt.pipeline(
        pipeline_name=f"mailbridge_{name}",
        destination=dlt.destinations.duckdb(credentials),
        dataset_name=dataset,
        pipelines_dir=str(state_dir(config) / "dlt"),
    )


@dataclass(frozen=True)
class Extraction:
    """One dlt source and the pipeline that loads it."""

    name: str
    pipeline: dlt.Pipeline
    source: DltSource


def extraction_names(config: MailbridgeConfig) -> list[str]:
    """The extractions a sync runs, in order: the settings, the CRM, each configured ESP type."""
    return ["mailbridge", "crm", *sorted({account.type for account in config.esp_accounts})]


def extraction_named(config: MailbridgeConfig, name: str, *, full_refresh: bool, run_id: str) -> Extraction:
    """The source and pipeline of one extraction."""
    if name == "mailbridge":
        return Extraction(name, make_pipeline(config, name, SETTINGS_DATASET), settings_source(config))
    if name == "crm":
        source = crm_source(
            config.crm.connection_url(config.base_dir),
            config.crm,
            run_id=run_id,
            field_mappings=config.field_mappings,
            list_links=config.list_links,
        )
        return Extraction(name, make_pipeline(config, name, CRM_DATASET), source)
    if name not in extraction_names(config):
        raise KeyError(f"no extraction named {name!r}")
    esp = connector(name)
    source = esp.source()(
        accounts=config.accounts_of_type(name),
        full_refresh=full_refresh,
        run_id=run_id,
        extraction=config.extraction,
    )
    return Extraction(name, make_pipeline(config, name, esp.dataset), source)


def extractions(config: MailbridgeConfig, *, full_refresh: bool, run_id: str) -> Iterator[Extraction]:
    """Every extraction a sync runs, built one at a time."""
    for name in extraction_names(config):
        yield extraction_named(config, name, full_refresh=full_refresh, run_id=run_id)


def settle_pending(pipeline: dlt.Pipeline) -> str | None:
    """Finish what an earlier run of the pipeline left unloaded (a killed sync), or drop it
    when it cannot be loaded; says what was done, or None when nothing was pending.

    dlt's `run` would otherwise load the pending package and return without extracting: the
    sync after a killed one would report success on the old data, and a package that fails to
    load would stop every later sync. Dropping is safe: a package's incremental state is
    committed only with its load, so the next extraction reads its data again."""
    if not pipeline.has_pending_data:
        return None
    try:
        pipeline.normalize()
        pipeline.load()
    except Exception as error:  # any failure: the package must not block the runs after it
        pipeline.drop_pending_packages()
        message = (
            f"{pipeline.pipeline_name}: an earlier run left data that cannot be loaded "
            f"({error.__class__.__name__}); dropped, and extracted again"
        )
        LOG.warning(message)
        return message
    message = f"{pipeline.pipeline_name}: loaded what an earlier, interrupted run had extracted"
    LOG.warning(message)
    return message


def run_extraction(item: Extraction) -> LoadInfo:
    """One extraction: what an earlier run left pending first, then this run's data."""
    from mailbridge.key_store import kept_keys  # Parquet, read only by a run

    settle_pending(item.pipeline)
    with kept_keys(key_store_dir(item.pipeline)):
        return item.pipeline.run(item.source)


def run_extractions(config: MailbridgeConfig, *, full_refresh: bool, run_id: str) -> dict[str, LoadInfo]:
    """Run every extraction in turn (DuckDB takes one writer at a time)."""
    return {item.name: run_extraction(item) for item in extractions(config, full_refresh=full_refresh, run_id=run_id)}
