"""The Dagster code location: assembles Definitions from the small modules beside it."""

from __future__ import annotations

import dagster as dg

from assets.ingest import build_ingest_assets
from assets.jobs import build_jobs, build_schedules
from assets.resources import build_resources
from assets.transform import mailbridge_dbt_models

defs = dg.Definitions(
    assets=[*build_ingest_assets(), mailbridge_dbt_models],
    jobs=build_jobs(),
    schedules=build_schedules(),
    resources=build_resources(),
)
