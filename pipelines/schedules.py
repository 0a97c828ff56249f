"""Schedules (UTC): the nightly full verify + compliance + catalog refresh, the hourly
incremental verify, and a daily catch-up ingest of yesterday's landing day (for files the
sensor did not see, e.g. while it was stopped; re-ingesting is a no-op)."""

from datetime import timedelta

import dagster as dg

from .jobs import hourly_verify_job, ingest_job, nightly_refresh_job

RUNNING = dg.DefaultScheduleStatus.RUNNING

nightly_refresh_schedule = dg.ScheduleDefinition(
    name="nightly_refresh",
    job=nightly_refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="02:00 UTC: full verify, compliance evaluation, DuckDB catalog refresh.",
)

# Not at 02:15: the nightly run is verifying then; only one run advances the trust store at a time.
hourly_verify_schedule = dg.ScheduleDefinition(
    name="hourly_incremental_verify",
    job=hourly_verify_job,
    cron_schedule="15 0,1,3-23 * * *",
    execution_timezone="UTC",
    default_status=RUNNING,
    description="Every hour at :15 (except during the nightly run): verify from the last trusted checkpoint.",
)


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
