"""Schedules (UTC): the nightly full verify + compliance + catalog refresh, the hourly
incremental verify, and a daily catch-up ingest of yesterday's landing day (for files the
sensor did not see, e.g. while it was stopped; re-ingesting is a no-op)."""

from datetime import timedelta

import dagster as dg

from auditlake.lake.meta import META, has_tables
from pipelines.resources import LakeResource

from .jobs import hourly_verify_job, ingest_job, nightly_refresh_job

RUNNING = dg.DefaultScheduleStatus.RUNNING

def _once_there_is_a_lake(lake: LakeResource) -> dg.RunRequest | dg.SkipReason:
    """A run, or before the first ingest (no lake yet) a skip that says so: a failed run
    every hour of a new deployment would read as a broken lake."""
    lk = lake.lake()
    if lk.read_json(META) is None and not has_tables(lk):
        return dg.SkipReason(f"no lake at {lk.uri} yet: nothing to verify until the first ingest")
    return dg.RunRequest()


@dg.schedule(
    name="nightly_refresh",
    job=nightly_refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="02:00 UTC: full verify, compliance evaluation, DuckDB catalog refresh.",
)
def nightly_refresh_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    return _once_there_is_a_lake(lake)


# Not at 02:15: the nightly run is verifying then; only one run advances the trust store at a time.
@dg.schedule(
    name="hourly_incremental_verify",
    job=hourly_verify_job,
    cron_schedule="15 0,1,3-23 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="Every hour at :15 (except during the nightly run): verify from the last trusted checkpoint.",
)
def hourly_verify_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    return _once_there_is_a_lake(lake)


@dg.schedule(
    name="daily_catch_up_ingest",
    job=ingest_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="00:30 UTC: ingest yesterday's landing day (idempotent; catches files the sensor missed).",
)
def daily_catch_up_ingest(context: dg.ScheduleEvaluationContext):
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"catch-up:{day}", partition_key=day)


SCHEDULES = [nightly_refresh_schedule, hourly_verify_schedule, daily_catch_up_ingest]
