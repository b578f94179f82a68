"""The `beatless` command.

beatless local [--tasks N] ...   the autoscaling loop on this machine (README command 1)
beatless jobs [--markdown]       the registry of scheduled jobs
beatless job NAME [--event JSON] run one job's Lambda handler here (against $DATABASE_URL)
beatless invoke NAME [--event FILE | --event-json JSON]   any Lambda, as the console's Test does
beatless schedule [--speed N] [--hours H] [--jobs a,b]   the registry's schedules fired here
beatless cost [--measured FILE] [--worker-hours H]       the monthly cost beside always-on Celery
beatless db migrate [--dsn URL]  apply the PostgreSQL schema migrations (default: $DATABASE_URL)
beatless graph-node              one graph node (settings from the environment: beatless.graphs.node.settings)
beatless api [--port N]          the task API on this machine (beatless.local.api_commands)
beatless tasks list|launch|status|follow|revoke|retry|stats   its client
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beatless.errors import InvalidInputError
from beatless.local.api_commands import add_parsers as add_api_parsers


def _local(args: argparse.Namespace) -> int:
    from beatless.local.runner import LocalOptions, run

    options = LocalOptions(
        tasks=args.tasks,
        steps=args.steps,
        step_seconds=args.step_seconds,
        sample_interval_seconds=args.sample_interval,
        max_workers=args.max_workers,
        timeout_seconds=args.timeout,
        wait_for_scale_in=not args.no_scale_in,
        graph_nodes=args.graph_nodes,
        demo=not args.no_demo,
        schedule_speed=args.schedule_speed,
        schedule_window_minutes=args.schedule_window,
        task_api=not args.no_api,
        report_path=Path(args.report) if args.report else None,
        view=("live" if sys.stdout.isatty() else "plain") if args.view == "auto" else args.view,
        state_dir=Path(args.state_dir),
        resume=args.resume,
        plot=not args.no_plot,
    )
    report = run(options)
    if report.interrupted:
        return 130  # as a shell reports a Ctrl-C
    if not report.ok:
        print(
            f"FAILED: {report.tasks} tasks sent, {report.applied} applied once, effect total {report.total}"
            + ("" if report.graph_plane is None or report.graph_plane.ok else "; the graph plane failed"),
            file=sys.stderr,
        )
        return 1
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from beatless.jobs import JOBS
    from beatless.jobs.table import render_markdown

    if args.markdown:
        print(render_markdown())
    else:
        for job in JOBS:
            print(f"{job.name:32} {job.schedule.expression:28} {job.schedule.timezone:8} {job.summary}")
    return 0


def _db_migrate(args: argparse.Namespace) -> int:
    import os

    from beatless.db import database_from_env, migrate

    env = dict(os.environ)
    if args.dsn:
        env.pop("DATABASE_SECRET_ARN", None)
        env["DATABASE_URL"] = args.dsn
    database = database_from_env(env)
    with database.connect(application_name="beatless:cli:db-migrate") as conn:
        result = migrate(conn)
    where = database.settings.describe()
    applied = ", ".join(result.applied) or "nothing (already up to date)"
    print(f"{where}: applied {applied}; schema version {result.version}")
    if result.ahead:
        print(f"the database also has newer migrations this code does not know: {', '.join(result.ahead)}")
    return 0


def _job(args: argparse.Namespace) -> int:
    """Run one registry job's Lambda handler here, against $DATABASE_URL etc.; print its summary."""
    import json

    from beatless.jobs import JOBS
    from beatless.local.invoke import invoke

    if args.name not in {j.name for j in JOBS}:
        raise InvalidInputError("name", f"no scheduled job {args.name!r} (see `beatless jobs`)")
    try:
        event = json.loads(args.event) if args.event else {}
    except json.JSONDecodeError as exc:
        raise InvalidInputError("--event", f"is not valid JSON ({exc.msg})") from None
    done = invoke(args.name, event)
    if done.logs.strip():
        sys.stderr.write(done.logs)
    if done.error is not None:
        print(json.dumps(done.error, indent=2), file=sys.stderr)
        return 1
    print(json.dumps(done.result, indent=2, default=str))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    """Fire the registry jobs on their schedules, here, on a simulated clock."""
    from datetime import UTC, datetime, timedelta

    from beatless.jobs import JOBS
    from beatless.local.invoke import invoke
    from beatless.local.scheduler import Run, SchedulerLoop, SimulatedClock

    names = set(args.jobs.split(",")) if args.jobs else {j.name for j in JOBS}
    unknown = names - {j.name for j in JOBS}
    if unknown:
        raise InvalidInputError("--jobs", f"not registry jobs: {', '.join(sorted(unknown))}")
    if args.speed <= 0 or args.hours <= 0:
        raise InvalidInputError("--speed/--hours", "must be positive")
    try:
        start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    except ValueError:
        raise InvalidInputError("--from", f"not an ISO time: {args.start!r}") from None
    start = start if start.tzinfo else start.replace(tzinfo=UTC)

    def show(run: Run) -> None:
        label = f"{run.fire.job}:{run.fire.label}" if run.fire.label else run.fire.job
        verdict = "ok" if run.ok else f"FAILED {run.result}"[:200]
        print(f"{run.fire.at:%Y-%m-%d %H:%M} {label:<38} {run.seconds * 1000:6.0f} ms {verdict}", flush=True)

    jobs = [j for j in JOBS if j.name in names]
    loop = SchedulerLoop(
        jobs, lambda name, event: invoke(name, event).outcome, SimulatedClock(start, args.speed)
    )
    try:
        runs = loop.run(start + timedelta(hours=args.hours), on_run=show)
    except KeyboardInterrupt:
        runs = loop.runs
    failed = sum(1 for run in runs if not run.ok)
    print(f"{len(runs)} runs, {failed} failed: {loop.counts()}")
    return 1 if failed else 0


def _cost(args: argparse.Namespace) -> int:
    """The monthly cost report (`beatless.cost.report`)."""
    import dataclasses
    import json

    from beatless.cost.report import Assumptions, build, measured, render
    from beatless.jobs import JOBS

    for name in ("worker_hours", "job_seconds", "metrics_per_job"):
        if getattr(args, name) < 0:
            raise InvalidInputError(f"--{name.replace('_', '-')}", "must not be negative")
    assumptions = dataclasses.replace(
        Assumptions(), worker_hours=args.worker_hours, job_seconds=args.job_seconds,
        metrics_per_job=args.metrics_per_job,
    )  # fmt: skip
    if args.measured:
        try:
            summary = json.loads(Path(args.measured).read_text())
        except (OSError, ValueError) as error:
            raise InvalidInputError("--measured", f"cannot read {args.measured}: {error}") from None
        assumptions = measured(summary, assumptions)
    report = build(JOBS, assumptions)
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0


def _invoke(args: argparse.Namespace) -> int:
    from beatless.local.invoke import invoke, load_event, report

    done = invoke(args.name, load_event(args.name, args.event, args.event_json))
    report(done)
    return 0 if done.ok else 1


def _graph_node(args: argparse.Namespace) -> int:
    from beatless.graphs.node.server import main as serve

    return serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="beatless", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="run the autoscaling loop locally (Redis, moto, Celery workers)")
    local.add_argument("--tasks", type=int, default=60, help="tasks in the burst (default 60)")
    local.add_argument("--steps", type=int, default=3, help="steps per task (default 3)")
    local.add_argument("--step-seconds", type=float, default=0.5, help="seconds per step (default 0.5)")
    local.add_argument("--sample-interval", type=float, default=2.0, help="monitor interval (default 2 s)")
    local.add_argument("--max-workers", type=int, default=4, help="most worker processes (default 4)")
    local.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    local.add_argument("--no-scale-in", action="store_true", help="stop once the queues drained")
    local.add_argument("--graph-nodes", type=int, default=2, help="graph nodes to start (default 2; 0: none)")
    local.add_argument("--no-demo", action="store_true", help="skip the demo workload of heavy operations")
    local.add_argument(
        "--schedule-speed", type=float, default=60.0,
        help="replay the registry's schedules at this speed (default 60x; 0: no scheduled jobs)",
    )  # fmt: skip
    local.add_argument(
        "--schedule-window", type=float, default=60.0, help="minutes of schedules replayed, up to now (60)"
    )
    local.add_argument("--no-api", action="store_true", help="do not serve the task API during the run")
    local.add_argument(
        "--report", help="also write the summary (JSON) here: `beatless cost --measured` reads it"
    )
    local.add_argument(
        "--view", choices=("auto", "live", "plain"), default="auto",
        help="live: the terminal view; plain: a line per reading (default: live on a terminal)",
    )  # fmt: skip
    local.add_argument(
        "--state-dir", default=".beatless-local",
        help="the run's data, logs, pids and plot (default .beatless-local)",
    )  # fmt: skip
    local.add_argument(
        "--resume", action="store_true",
        help="carry on with the queues and database an interrupted run left (default: start clean)",
    )  # fmt: skip
    local.add_argument("--no-plot", action="store_true", help="do not draw the plot at the end")
    local.set_defaults(func=_local)
    jobs = sub.add_parser("jobs", help="list the scheduled jobs of the registry")
    jobs.add_argument("--markdown", action="store_true", help="the README's table")
    jobs.set_defaults(func=_jobs)
    run_job = sub.add_parser(
        "job", help="run one scheduled job's handler here (e.g. against a local database)"
    )
    run_job.add_argument("name", help="a registry job name (see `beatless jobs`)")
    run_job.add_argument("--event", help="the event as JSON, e.g. '{\"dry_run\": true}' (default {})")
    run_job.set_defaults(func=_job)
    invoke = sub.add_parser("invoke", help="run any Lambda's handler here as the console's Test button does")
    invoke.add_argument("name", help="a file of bin/lambda/ (a job, db_migrate, task_api)")
    invoke.add_argument("--event", help="an event file (default events/<name>/minimal.json, else {})")
    invoke.add_argument("--event-json", help="the event as JSON text")
    invoke.set_defaults(func=_invoke)
    schedule = sub.add_parser(
        "schedule", help="fire the registry jobs on their schedules here (simulated clock)"
    )
    schedule.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (60)")
    schedule.add_argument("--hours", type=float, default=24.0, help="simulated hours to run (24)")
    schedule.add_argument("--from", dest="start", help="simulated start, ISO (default: now)")
    schedule.add_argument("--jobs", help="comma-separated registry jobs (default: all)")
    schedule.set_defaults(func=_schedule)
    cost = sub.add_parser("cost", help="the monthly cost, beside the always-on Celery it replaces")
    cost.add_argument("--measured", help="a `beatless local --report` summary: measured runs and metrics")
    cost.add_argument("--worker-hours", type=float, default=30.0, help="busy worker hours a month (30)")
    cost.add_argument("--job-seconds", type=float, default=1.0, help="a job's run, unless measured (1 s)")
    cost.add_argument("--metrics-per-job", type=int, default=6, help="custom metrics a job, unless measured")
    cost.add_argument("--json", action="store_true", help="the report as JSON")
    cost.set_defaults(func=_cost)
    node = sub.add_parser("graph-node", help="run one graph node (LadybugDB behind its HTTP API)")
    node.set_defaults(func=_graph_node)
    db = sub.add_parser("db", help="the PostgreSQL database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_migrate = db_sub.add_parser("migrate", help="apply the schema migrations")
    db_migrate.add_argument("--dsn", help="postgresql://... (default: $DATABASE_URL or $DATABASE_SECRET_ARN)")
    db_migrate.set_defaults(func=_db_migrate)
    add_api_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InvalidInputError as exc:
        parser.error(str(exc))
    return 2


if __name__ == "__main__":
    sys.exit(main())
