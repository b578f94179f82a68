"""The scheduled-jobs stack: one `ScheduledJob` per registry entry, all from one
code asset; the schema migration they wait for; their console test events.

Order inside the stack: the migration custom resource (when any job needs the
database) before the functions and schedules of the jobs that need it; every
other job; then the watchdog (a job with `Need.METRICS_READ`), whose
environment lists the schedules of the jobs it judges (jobs whose period
needs it; each has one schedule: a job with several, such as the
kuzu_instance_monitor, has a short period and a direct missed-run alarm).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from beatless.errors import ConfigurationError
from beatless.jobs import API_FUNCTIONS, DEPLOY_FUNCTIONS, Job, Need
from beatless.jobs.schedules import needs_watchdog
from beatless.queues.wake import MONITOR_JOB
from infra.components.console_test_events import ConsoleTestEvents
from infra.components.database import CA_BUNDLE_IN_ASSET
from infra.components.job_grants import JobResources, MonitorAccess, WatchdogAccess
from infra.components.jobs_dashboard import JobsDashboard
from infra.components.lambda_bundle import lambda_code
from infra.components.scheduled_job import ScheduledJob
from infra.components.schema_migration import HANDLER as MIGRATION_HANDLER
from infra.components.schema_migration import SchemaMigration
from infra.config import LambdaSource

assert MIGRATION_HANDLER in DEPLOY_FUNCTIONS


def construct_id(job_name: str) -> str:
    """`worker_monitor` -> `WorkerMonitor`: the file name is the identity (never rename it)."""
    return "".join(part.capitalize() for part in job_name.split("_"))


class ScheduledJobsStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        jobs: Sequence[Job],
        source: LambdaSource,
        resources: JobResources,
        alarm_topic: sns.ITopic,
        log_retention: logs.RetentionDays,
        events_dir: Path,
        create_test_event_registry: bool,
        database_ca_bundle: Path | None = None,
        **kwargs: Any,
    ):
        super().__init__(scope, id, **kwargs)
        watchdogs = [job for job in jobs if Need.METRICS_READ in job.needs]
        if len(watchdogs) > 1:
            raise ConfigurationError(f"more than one watchdog job: {[j.name for j in watchdogs]}")
        watchdog = watchdogs[0] if watchdogs else None
        needs_database = any(Need.DATABASE in job.needs for job in jobs)

        handlers = [job.name for job in jobs] + ([MIGRATION_HANDLER] if needs_database else [])
        extra = {CA_BUNDLE_IN_ASSET: database_ca_bundle} if needs_database and database_ca_bundle else {}
        code = lambda_code(source, handlers, extra)

        self.migration: SchemaMigration | None = None
        if needs_database:
            if resources.database is None:
                raise ConfigurationError("jobs need the database, which this stack does not provide")
            self.migration = SchemaMigration(
                self,
                "SchemaMigration",
                code=code,
                handlers_dir=source.handlers_dir,
                migrations_dir=source.repo_root / "src" / "beatless" / "db" / "migrations",
                database=resources.database,
                log_retention=log_retention,
            )

        def build(job: Job, job_resources: JobResources) -> ScheduledJob:
            after = [self.migration.resource] if self.migration and Need.DATABASE in job.needs else []
            return ScheduledJob(
                self,
                construct_id(job.name),
                job=job,
                code=code,
                resources=job_resources,
                alarm_topic=alarm_topic,
                log_retention=log_retention,
                watchdog=watchdog,
                after=after,
            )

        # The monitor first: the producers among the jobs (`Need.WAKE_MONITOR`) may wake it.
        built: dict[str, ScheduledJob] = {}
        for job in sorted((j for j in jobs if j is not watchdog), key=lambda j: j.name != MONITOR_JOB):
            if Need.WAKE_MONITOR in job.needs and MONITOR_JOB in built:
                monitor = built[MONITOR_JOB].function
                wakes = MonitorAccess(monitor.function_name, monitor.function_arn)
                built[job.name] = build(job, dataclasses.replace(resources, monitor=wakes))
            else:
                built[job.name] = build(job, resources)
        self.jobs = {job.name: built[job.name] for job in jobs if job is not watchdog}
        self.watched = [name for name, built in self.jobs.items() if needs_watchdog(built.job.period_seconds)]
        several = [name for name in self.watched if len(self.jobs[name].job.schedules) > 1]
        if several:
            # WATCHED_JOBS names one schedule per job (beatless.watchdog.parse_watched_jobs).
            raise ConfigurationError(
                f"jobs {several} have several schedules and a period the watchdog must judge, "
                "which judges one schedule per job"
            )
        if watchdog is not None:
            watched_jobs = [
                {
                    "name": name,
                    "schedule": self.jobs[name].job.schedule.expression,
                    "timezone": self.jobs[name].job.schedule.timezone,
                    "period_seconds": self.jobs[name].job.period_seconds,
                    "schedule_name": self.jobs[name].schedule.ref,
                    "schedule_group": "default",
                }
                for name in self.watched
            ]
            access = WatchdogAccess(
                watched_jobs_json=self.to_json_string(watched_jobs),
                schedule_arns=[self.jobs[name].schedule.attr_arn for name in self.watched],
            )
            self.jobs[watchdog.name] = build(watchdog, dataclasses.replace(resources, watchdog=access))

        functions: dict[str, lambda_.IFunction] = {name: built.function for name, built in self.jobs.items()}
        if self.migration is not None:
            functions[MIGRATION_HANDLER] = self.migration.function
        self.dashboard = JobsDashboard(self, "Dashboard", jobs=self.jobs)
        self.test_events = ConsoleTestEvents(
            self,
            "TestEvents",
            functions=functions,
            events_dir=events_dir,
            create_registry=create_test_event_registry,
            known=API_FUNCTIONS,  # the API stack deploys the task API's events
        )
