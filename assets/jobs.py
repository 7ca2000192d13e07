"""The sync jobs and their schedules (present, switched off by default)."""

from __future__ import annotations

import dagster as dg

from assets.ingest import SyncConfig, ingest_op_names
from assets.project import SYNC_TAG
from assets.pushback import PushConfig

PUSHBACK = dg.AssetSelection.groups("pushback")


def sync_run_config(sync: SyncConfig, log_level: str | None = None, push: PushConfig | None = None) -> dg.RunConfig:
    """Run config of a sync job: the same full/incremental choice for every extraction."""
    loggers = {"console": {"config": {"log_level": log_level}}} if log_level else None
    ops: dict[str, dg.Config] = {op: sync for op in ingest_op_names()}
    if push is not None:
        ops["pushback__outbox"] = push
    return dg.RunConfig(ops=ops, loggers=loggers)


def _sync_job(name: str, full_refresh: bool, description: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.all() - PUSHBACK,
        description=description,
        config=sync_run_config(SyncConfig(full_refresh=full_refresh)),
        # one process, one step at a time: DuckDB takes a single writer
        executor_def=dg.in_process_executor,
        tags={SYNC_TAG: "full" if full_refresh else "incremental"},
    )


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        _sync_job("full_sync", True, "Re-read every member of every ESP list and the whole CRM, then reconcile."),
        _sync_job("incremental_sync", False, "Read what changed since the last sync, then reconcile."),
        dg.define_asset_job(
            "sync_and_push",
            selection=dg.AssetSelection.all(),
            description="Incremental sync, reconcile, push (behind the blocking push gate), then an incremental "
            "sync to verify: what was pushed shows as confirmed. Set pushback__outbox.config.dry_run to only report.",
            config=sync_run_config(SyncConfig(full_refresh=False), push=PushConfig()),
            executor_def=dg.in_process_executor,
            tags={SYNC_TAG: "incremental", "mailbridge/push": "true"},
        ),
        dg.define_asset_job(
            "push",
            selection=PUSHBACK - dg.AssetSelection.assets(["pushback", "verification"]),
            description="Push the queue as the last sync left it (the push gate still applies).",
            config=dg.RunConfig(ops={"pushback__outbox": PushConfig()}),
            executor_def=dg.in_process_executor,
        ),
    ]


def build_schedules() -> list[dg.ScheduleDefinition]:
    return [
        dg.ScheduleDefinition(
            name="incremental_sync_every_30_minutes",
            job_name="incremental_sync",
            cron_schedule="*/30 * * * *",
            default_status=dg.DefaultScheduleStatus.STOPPED,
        ),
        dg.ScheduleDefinition(
            name="nightly_full_sync",
            job_name="full_sync",
            cron_schedule="0 2 * * *",
            default_status=dg.DefaultScheduleStatus.STOPPED,
        ),
    ]
