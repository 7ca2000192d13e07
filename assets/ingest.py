"""dlt assets: the raw layer, one multi-asset per source (settings, CRM, each ESP type)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from assets.project import WAREHOUSE_POOL, project_config
from assets.resources import WarehouseResource
from pipelines.runner import (
    Extraction,
    extraction_named,
    extraction_names,
    extractions,
    key_store_dir,
    settle_pending,
)


class SyncConfig(dg.Config):  # type: ignore[misc]
    """Per-run choice: re-read everything (full) or only what changed since the last run."""

    full_refresh: bool = False


class RawLayerTranslator(DagsterDltTranslator):  # type: ignore[misc]
    """Asset keys name the layer: ["raw", source, resource]."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        source_name = data.resource.source_name or "unknown"
        return spec.replace_attributes(
            key=dg.AssetKey(["raw", source_name, data.resource.name]),
            deps=[],
            group_name="raw",
        )


def _extraction_asset(template: Extraction) -> dg.AssetsDefinition:
    name = f"raw_{template.name}"

    @dlt_assets(
        dlt_source=template.source,
        dlt_pipeline=template.pipeline,
        name=name,
        dagster_dlt_translator=RawLayerTranslator(),
        pool=WAREHOUSE_POOL,
    )
    def extract(
        context: dg.AssetExecutionContext, dlt: DagsterDltResource, warehouse: WarehouseResource, config: SyncConfig
    ) -> Iterator[Any]:
        from mailbridge.key_store import kept_keys  # Parquet, read only by a run

        # the warehouse resource decides the destination at run time
        project = project_config().model_copy(update={"warehouse": warehouse.path})
        # a variable missing for any account stops every extraction of the run, before it reads anything
        project.check_environment()
        run = extraction_named(project, template.name, full_refresh=config.full_refresh, run_id=context.run_id)
        settled = settle_pending(run.pipeline)
        if settled is not None:
            context.log.warning(settled)
        with kept_keys(key_store_dir(run.pipeline)):
            yield from dlt.run(context=context, dlt_source=run.source, dlt_pipeline=run.pipeline)

    return extract


def build_ingest_assets() -> list[dg.AssetsDefinition]:
    config = project_config()
    return [_extraction_asset(item) for item in extractions(config, full_refresh=False, run_id="definitions")]


def ingest_op_names() -> list[str]:
    return [f"raw_{name}" for name in extraction_names(project_config())]
