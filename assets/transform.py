"""dbt assets: staging, intermediate and marts; dbt tests surface as asset checks."""

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from assets.project import DBT_PROJECT_DIR, WAREHOUSE_POOL
from assets.resources import WarehouseResource

MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


def _newest_source_change() -> float:
    sources = [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    for folder in ("models", "macros", "tests"):
        sources.extend(path for path in (DBT_PROJECT_DIR / folder).rglob("*") if path.is_file())
    return max(path.stat().st_mtime for path in sources if path.exists())


def ensure_manifest() -> Path:
    """dbt's manifest, parsed again when missing or older than the dbt project's files."""
    if not MANIFEST.is_file() or MANIFEST.stat().st_mtime < _newest_source_change():
        from dbt.cli.main import dbtRunner

        result = dbtRunner().invoke(
            ["parse", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR), "--quiet"]
        )
        if not result.success:
            raise RuntimeError(f"dbt parse failed in {DBT_PROJECT_DIR}: {result.exception}")
    return MANIFEST


class LayeredDbtTranslator(DagsterDbtTranslator):  # type: ignore[misc]
    """Asset keys name the layer: ["staging", "stg_..."], ["marts", "fct_..."]."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        layer = dbt_resource_props["fqn"][1] if len(dbt_resource_props["fqn"]) > 2 else "models"
        return dg.AssetKey([layer, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "models"


@dbt_assets(
    manifest=ensure_manifest(),
    dagster_dbt_translator=LayeredDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)),
    pool=WAREHOUSE_POOL,
)
def mailbridge_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """`dbt build`: models and their tests, the run id passed through to the marts. The
    warehouse resource is what holds the warehouse lock for the run."""
    yield from dbt.cli(["build", "--vars", json.dumps({"run_id": context.run_id})], context=context).stream()
