"""Push-back in Dagster: the push and verification assets downstream of the marts, the
blocking push gate, campaign sends behind the send gate, and run-failure alerts."""

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster_dbt import DbtCliResource

from assets.project import WAREHOUSE_POOL, project_config
from assets.resources import DBT_BUILD, WarehouseResource, dbt_run_id
from assets.transform import ensure_manifest
from mailbridge.config import MailbridgeConfig

# what the assets and the op run (the push, the gates, DuckDB, httpx) is imported when they run:
# the code location loads without it
if TYPE_CHECKING:
    from pipelines.pushback import PushReport

QUEUE_KEY = dg.AssetKey(["marts", "fct_pushback_queue"])
OUTBOX_KEY = dg.AssetKey(["pushback", "outbox"])
VERIFICATION_KEY = dg.AssetKey(["pushback", "verification"])
ALERTS = logging.getLogger("mailbridge.alerts")


class PushConfig(dg.Config):  # type: ignore[misc]
    """dry_run: report what would be written and change nothing."""

    dry_run: bool = False
    allow_permanent_delete: bool = False


def _project(warehouse: WarehouseResource) -> MailbridgeConfig:
    return project_config().model_copy(update={"warehouse": warehouse.path})


def report_lines(report: "PushReport") -> list[str]:
    """Per list, action and source: counts by outcome and sample rows (to whom, and why)."""
    lines = []
    for (link, action, source), counts in sorted(report.counts.items()):
        outcome = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        lines.append(
            f"{link} · {action} · from {source}: {outcome} — e.g. {'; '.join(report.samples[(link, action, source)])}"
        )
    return lines


@dg.asset_check(
    asset=QUEUE_KEY,
    name="push_gate",
    blocking=True,
    description="Refuses the push when the reconciliation is older than gating.push_max_age_minutes "
    "or the latest dbt run failed; reports the lists held because their extraction was aborted.",
)
def push_gate_check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    import duckdb

    from pipelines.gate import push_gate

    project = _project(warehouse)
    with duckdb.connect(str(project.warehouse_path())) as db:
        verdict = push_gate(db, project.gating.push_max_age_minutes)
    return dg.AssetCheckResult(
        passed=verdict.allowed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.explain(),
        metadata={
            "reasons": verdict.reasons,
            "held_lists": verdict.aborted_lists,
            "reconciled_at": verdict.reconciled_at.isoformat() if verdict.reconciled_at else None,
        },
    )


@dg.asset(
    key=OUTBOX_KEY,
    deps=[QUEUE_KEY],
    group_name="pushback",
    pool=WAREHOUSE_POOL,
    description="Writes the queue's ready actions to the ESPs and the CRM; every attempt lands in ops.pushback_outbox.",
)
def pushback_outbox(
    context: dg.AssetExecutionContext, config: PushConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult[Any]:
    from pipelines.pushback import PushAccountFailed, PushQueueError, PushRefused, push

    try:
        report = push(
            _project(warehouse),
            run_id=context.run_id,
            dry_run=config.dry_run,
            allow_permanent_delete=config.allow_permanent_delete,
        )
    except PushRefused as refused:
        raise dg.Failure(description=str(refused), metadata={"reasons": refused.verdict.reasons}) from None
    except PushAccountFailed as failed:
        context.log.error("push-back, account refused:\n" + "\n".join(report_lines(failed.report)))
        raise dg.Failure(
            description=f"an ESP refused the credentials; its actions stay ready: {failed}",
            metadata={"accounts": failed.errors},
        ) from None
    except PushQueueError as error:
        raise dg.Failure(description=str(error)) from None
    title = "dry run, nothing written" if config.dry_run else "pushed"
    lines = report_lines(report)
    context.log.info(f"push-back ({title}):\n" + ("\n".join(lines) or "nothing ready"))
    totals: dict[str, int] = {}
    for counts in report.counts.values():
        for status, count in counts.items():
            totals[status] = totals.get(status, 0) + count
    return dg.MaterializeResult(
        metadata={
            "dry_run": config.dry_run,
            "outcomes": totals,
            "by_list_and_action": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines) or "nothing ready"),
            "esp_write_requests": report.write_requests,
            "crm_statements": report.crm_statements,
            "confirmed_from_earlier_pushes": report.confirmed,
        }
    )


@dg.asset(
    key=VERIFICATION_KEY,
    deps=[OUTBOX_KEY],
    group_name="pushback",
    pool=WAREHOUSE_POOL,
    description="An incremental sync and a rebuild after the push: what the push sent is confirmed or sent again.",
)
def pushback_verification(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, dbt: DbtCliResource
) -> dg.MaterializeResult[Any]:
    import duckdb

    from pipelines.pushback import confirm_previous_attempts
    from pipelines.runner import run_extractions

    project = _project(warehouse)
    verify_run = f"{context.run_id}-verify"
    run_extractions(project, full_refresh=False, run_id=verify_run)
    with dbt_run_id(verify_run):
        dbt.cli([*DBT_BUILD], manifest=ensure_manifest(), raise_on_error=True).wait()
    with duckdb.connect(str(project.warehouse_path())) as db:
        confirmed = confirm_previous_attempts(db)
        rows = db.execute(
            "select status, count(*) from ops.pushback_outbox where run_id = ? group by status", [context.run_id]
        ).fetchall()
    outcomes = {status: count for status, count in rows}
    context.log.info(f"verification: {confirmed} confirmed; this run's attempts now: {outcomes}")
    return dg.MaterializeResult(metadata={"confirmed": confirmed, "attempts_of_this_run": outcomes})


class SendConfig(dg.Config):  # type: ignore[misc]
    campaign_id: str
    esp_account: str | None = None
    max_age_minutes: int | None = None


@dg.op(pool=WAREHOUSE_POOL)
def send_campaign_op(context: dg.OpExecutionContext, config: SendConfig, warehouse: WarehouseResource) -> None:
    """Send the campaign if its list passes the send gate; a refusal fails the run with the reasons."""
    from pipelines.send import send_campaign

    result = send_campaign(
        _project(warehouse),
        config.campaign_id,
        account_name=config.esp_account,
        max_age_minutes=config.max_age_minutes,
    )
    if not result.sent:
        raise dg.Failure(
            description=f"send of campaign {config.campaign_id} refused: " + "; ".join(result.reasons),
            metadata={"reasons": result.reasons},
        )
    context.log.info(f"campaign {config.campaign_id} sent to {result.esp_account}/{result.esp_list_id}")


@dg.job(description="Send one ESP campaign, only if its list is freshly reconciled and no opt-out waits.")
def send_campaign_job() -> None:
    send_campaign_op()


def alert_log_path() -> Path:
    """Alerts go beside the warehouse: .mailbridge/logs/alerts.jsonl in the demo."""
    return project_config().warehouse_path().parent / "logs" / "alerts.jsonl"


def log_alert(job_name: str, run_id: str, message: str) -> dict[str, Any]:
    alert = {"at": datetime.now(UTC).isoformat(), "job": job_name, "run_id": run_id, "message": message}
    ALERTS.error("run failed: %s (%s): %s", job_name, run_id, message)
    path = alert_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(alert) + "\n")
    return alert


@dg.run_failure_sensor(
    name="log_run_failures",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every failed run becomes an alert in the log and in alerts.jsonl beside the warehouse.",
)
def log_run_failures(context: dg.RunFailureSensorContext) -> None:
    message = context.failure_event.message or "the run failed"
    log_alert(context.dagster_run.job_name, context.dagster_run.run_id, message)
