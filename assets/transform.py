"""dbt assets: staging, intermediate and marts; dbt tests surface as asset checks."""

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from assets.kpis import HEADLINES, headline
from assets.project import DBT_PROJECT_DIR, SYNC_TAG, WAREHOUSE_POOL
from assets.resources import DBT_BUILD, WarehouseResource, dbt_run_id, dbt_target_path

MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"


def _newest_source_change() -> float:
    sources = [DBT_PROJECT_DIR / "dbt_project.yml", DBT_PROJECT_DIR / "profiles.yml"]
    for folder in ("models", "macros", "tests", "snapshots"):
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
    """`dbt build`: models and their tests, the run id passed through to the marts; in a full sync
    with `--full-refresh`. A failure names each failed test or model, with the first rows a
    failed test found. The warehouse resource is what holds the warehouse lock for the run."""
    # a full sync builds the incremental models from scratch too (the event log, history, excepted)
    full_refresh = ["--full-refresh"] if context.run.tags.get(SYNC_TAG) == "full" else []
    with dbt_run_id(context.run_id):
        invocation = dbt.cli(
            [*DBT_BUILD, *full_refresh],
            context=context,
            raise_on_error=False,
            target_path=dbt_target_path(Path(warehouse.path)),
        )
    # the analytics marts carry their headline KPIs, read once dbt has let go of the warehouse:
    # their events and those of every model below them wait for the build to end, in the order
    # dbt sent them; every other event is handed to Dagster as it comes, while dbt goes on (held
    # back too, the events of a whole build were written after it, seconds of every sync)
    waiting = _headlines_and_below(context)
    held: list[Any] = []
    for event in invocation.stream():
        if _asset_of(context, event) in waiting:
            held.append(event)
        else:
            yield event
    for event in held:
        table = headline(Path(warehouse.path), _model_of(context, event)) if isinstance(event, dg.Output) else None
        yield event if table is None else event.with_metadata({**event.metadata, "kpis": dg.MetadataValue.md(table)})
    error = invocation.get_error()
    if error is None:
        return
    try:
        run_results = invocation.get_artifact("run_results.json")
    except (OSError, ValueError):
        raise error from None  # dbt stopped before it ran anything: its own message says why
    raise dg.Failure(description=describe_dbt_failures(run_results, Path(warehouse.path)))


def _model_of(context: dg.AssetExecutionContext, event: Any) -> str:
    return str(context.asset_key_for_output(event.output_name).path[-1])


def _asset_of(context: dg.AssetExecutionContext, event: Any) -> dg.AssetKey | None:
    """The asset an event of the dbt stream is about: its output's, its check's or its own."""
    key: dg.AssetKey | None = None
    if isinstance(event, dg.Output):
        key = context.asset_key_for_output(event.output_name)
    elif isinstance(event, dg.AssetCheckResult | dg.AssetMaterialization | dg.AssetObservation):
        key = event.asset_key
    return key


def _headlines_and_below(context: dg.AssetExecutionContext) -> set[dg.AssetKey]:
    """The marts with headline KPIs and every dbt asset downstream of them."""
    below: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for key, upstream in context.assets_def.asset_deps.items():
        for parent in upstream:
            below.setdefault(parent, set()).add(key)
    waiting = {key for key in context.assets_def.keys if key.path[-1] in HEADLINES}
    frontier = list(waiting)
    while frontier:
        for child in below.get(frontier.pop(), ()):
            if child not in waiting:
                waiting.add(child)
                frontier.append(child)
    return waiting


SAMPLE_ROWS = 5
SAMPLE_VALUE_LENGTH = 80


def describe_dbt_failures(run_results: Mapping[str, Any], warehouse: Path) -> str:
    """What failed in a dbt build, for whoever reads the sync's error: one line per failed test
    or model (its name and dbt's message), and under a failed test the rows it found."""
    results = list(run_results.get("results", []))
    failed = [result for result in results if result.get("status") in ("fail", "error")]
    skipped = sum(1 for result in results if result.get("status") == "skipped")
    lines = [f"dbt build: {len(failed)} of {len(results)} models and tests failed"]
    for result in failed:
        kind, _, rest = str(result.get("unique_id", "")).partition(".")
        name = rest.split(".")[1] if "." in rest else rest
        message = " ".join(line.strip() for line in str(result.get("message") or "").splitlines() if line.strip())
        lines.append(f"{kind} {name}: {message[:500] or result.get('status')}")
        if kind == "test" and result.get("status") == "fail" and result.get("compiled_code"):
            lines += [f"  {row}" for row in _failing_rows(str(result["compiled_code"]), warehouse)]
    if skipped:
        lines.append(f"{skipped} models and tests downstream of these were skipped")
    return "\n".join(lines)


def _failing_rows(test_sql: str, warehouse: Path) -> list[str]:
    """The first rows a failed data test returns, each as `column=value, ...`."""
    import duckdb  # only a failed build reads them, not the code location as it loads

    try:
        with duckdb.connect(str(warehouse), read_only=True) as db:
            cursor = db.execute(f"select * from (\n{test_sql}\n) as failing limit {SAMPLE_ROWS + 1}")
            columns = [column[0] for column in cursor.description or []]
            rows = cursor.fetchall()
    except duckdb.Error as error:
        return [f"(its rows could not be read: {str(error).splitlines()[0]})"]
    shown = [
        ", ".join(f"{column}={str(value)[:SAMPLE_VALUE_LENGTH]}" for column, value in zip(columns, row, strict=True))
        for row in rows[:SAMPLE_ROWS]
    ]
    return shown + (["..."] if len(rows) > SAMPLE_ROWS else [])
