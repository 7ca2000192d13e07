"""The Dagster code location: assembles Definitions from the small modules beside it."""

from __future__ import annotations

import dagster as dg

from assets.ingest import build_ingest_assets
from assets.jobs import build_jobs, build_schedules
from assets.pushback import log_run_failures, push_gate_check, pushback_outbox, pushback_verification, send_campaign_job
from assets.resources import build_resources
from assets.transform import mailbridge_dbt_models

defs = dg.Definitions(
    assets=[*build_ingest_assets(), mailbridge_dbt_models, pushback_outbox, pushback_verification],
    asset_checks=[push_gate_check],
    jobs=[*build_jobs(), send_campaign_job],
    schedules=build_schedules(),
    sensors=[log_run_failures],
    resources=build_resources(),
)
