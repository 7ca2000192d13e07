"""The Dagster code location: assembles Definitions from the small modules beside it."""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _loading() -> Iterator[None]:
    """Loading the code location makes some 300,000 objects (Dagster, dbt, dlt and the
    definitions) that live as long as the process, and next to no garbage: the collector's full
    passes over them took a fifth of the load. It waits while they are made, and its passes in
    a run leave them out (gc.freeze) until the process ends, when it collects them as before."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
        # at exit everything is collected and finalized as without the freeze (DuckDB's bindings,
        # when imported before, report what is left uncollected)
        atexit.register(gc.unfreeze)
    finally:
        if collecting:
            gc.enable()


with _loading():
    import dagster as dg

    from assets.ingest import build_ingest_assets
    from assets.jobs import build_jobs, build_schedules
    from assets.pushback import (
        log_run_failures,
        push_gate_check,
        pushback_outbox,
        pushback_verification,
        send_campaign_job,
    )
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
