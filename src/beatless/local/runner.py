"""`beatless local`: the whole system on one machine.

Starts what it needs on free loopback ports — a Redis broker, a moto server
as the AWS endpoint (CloudWatch, DynamoDB, EC2, S3 and an ECS service record).
First the graph plane (`beatless.local.graph_plane`): graph nodes register in
the instance registry, a graph is placed, loaded and queried, and one
`kuzu_instance_monitor` cycle runs. Then the autoscaling loop: it enqueues a
burst of sample tasks across the queues and priority levels through a real
Celery producer, and runs the worker monitor on its sampling grid. Meanwhile
the demo workload (`beatless.local.demo`, with a PostgreSQL server for the
operations' records and credits) sends heavy operations — create a graph,
ingest a financial dataset, an entity graph, communities, a backup — to the
same workers, and prints each one's progress and the credits held and charged. Each
reading is published to (moto's) CloudWatch exactly as the Lambda does, fed
to `beatless.queues.scaling.decide` — the same rules the CloudWatch alarms and step
policies implement in AWS — and the decision is carried out by starting or
stopping real Celery worker processes (SIGTERM: soft shutdown). It prints,
queue by queue, pending, reserved and backlog per worker until the queues
drain and the workers are scaled back in, then a summary; it fails (exit 1)
if a task was lost or applied twice, or the demo's effects are not what they
must be.

Local scaling periods are shortened (10 s alarm periods, a 20 s idle window)
so the run takes about a minute; everything else is the deployed code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

from beatless import metrics
from beatless.aws import reset_clients
from beatless.local.demo import Demo, DemoReport
from beatless.local.graph_plane import GraphPlaneReport, start_graph_plane
from beatless.local.scheduled import ScheduledJobs, ScheduleReport, start_task_api
from beatless.local.servers import MotoServer, PostgresServer, RedisServer, aws_environment, environ
from beatless.monitor import Monitor, MonitorSettings, Reading
from beatless.monitor.job import monitor_for
from beatless.queues.connection import BrokerSettings, broker_for
from beatless.queues.scaling import Decision, ScalingParameters, ScalingState, decide
from beatless.queues.scaling import Reading as ScalingReading
from beatless.workers import presence

ECS_CLUSTER = "beatless-local"
ECS_SERVICE = "workers"
# What the worker's long_running task adds up; the runner checks it at the end.
EFFECTS_APPLIED_KEY = "beatless:effects:applied"
EFFECTS_TOTALS_KEY = "beatless:effects:totals"

LOCAL_SCALING = ScalingParameters(
    max_tasks=4,
    scale_out_period_seconds=10,
    scale_out_cooldown_seconds=20,
    scale_in_period_seconds=10,
    scale_in_idle_seconds=20,
    heartbeat_stale_seconds=60,
)


@dataclass(frozen=True)
class LocalOptions:
    tasks: int = 60
    steps: int = 3
    step_seconds: float = 0.5
    sample_interval_seconds: float = 2.0
    max_workers: int = 4
    timeout_seconds: float = 600.0
    wait_for_scale_in: bool = True
    graph_nodes: int = 2
    demo: bool = True
    schedule_speed: float = 60.0  # 0: no scheduled jobs
    schedule_window_minutes: float = 60.0
    task_api: bool = True
    report_path: Path | None = None  # where the summary is written as JSON (`beatless cost --measured`)

    def __post_init__(self) -> None:
        from beatless.errors import InvalidInputError

        if self.tasks < 1:
            raise InvalidInputError("--tasks", f"must be at least 1, got {self.tasks}")
        if self.steps < 1 or self.step_seconds <= 0:
            raise InvalidInputError("--steps/--step-seconds", "must be positive")
        if not 0.5 <= self.sample_interval_seconds <= 10:
            raise InvalidInputError("--sample-interval", "must be between 0.5 and 10 seconds")
        if not 0 <= self.graph_nodes <= 8:
            raise InvalidInputError("--graph-nodes", f"must be between 0 and 8, got {self.graph_nodes}")
        if not 1 <= self.max_workers <= 16:
            raise InvalidInputError("--max-workers", f"must be between 1 and 16, got {self.max_workers}")
        if self.demo and self.graph_nodes == 0:
            raise InvalidInputError(
                "--graph-nodes", "the demo workload needs at least 1 graph node (or --no-demo)"
            )
        if self.schedule_speed < 0 or not 1 <= self.schedule_window_minutes <= 7 * 24 * 60:
            raise InvalidInputError(
                "--schedule-speed/--schedule-window", "speed >= 0, window 1 minute to 7 days"
            )
        if self.schedule_speed and self.graph_nodes == 0:
            raise InvalidInputError(
                "--graph-nodes", "the scheduled jobs need at least 1 graph node (or --schedule-speed 0)"
            )

    @property
    def needs_database(self) -> bool:
        return self.demo or self.task_api or bool(self.schedule_speed)


@dataclass
class RunReport:
    tasks: int
    applied: int = 0
    total: int = 0
    readings: int = 0
    failed_readings: int = 0
    peak_workers: int = 0
    first_worker_after_seconds: float | None = None
    first_consumed_after_seconds: float | None = None  # a worker held a task (reserved, or done)
    drained_after_seconds: float | None = None
    scaled_in_after_seconds: float | None = None
    datapoints_in_cloudwatch: int = 0
    cloudwatch_metrics: dict[str, int] = field(default_factory=dict)  # what PutMetricData created
    scale_ins_that_kept_a_busy_worker: int = 0
    decisions: list[str] = field(default_factory=list)
    graph_plane: GraphPlaneReport | None = None
    demo: DemoReport | None = None
    scheduled: ScheduleReport | None = None

    @property
    def ok(self) -> bool:
        graphs_ok = self.graph_plane is None or self.graph_plane.ok
        demo_ok = self.demo is None or self.demo.ok
        scheduled_ok = self.scheduled is None or self.scheduled.ok
        tasks_ok = self.applied == self.tasks and self.total == self.tasks
        return tasks_ok and graphs_ok and demo_ok and scheduled_ok

    def as_dict(self) -> dict[str, Any]:
        return {
            **(self.graph_plane.as_dict() if self.graph_plane is not None else {}),
            **(self.demo.as_dict() if self.demo is not None else {}),
            **(self.scheduled.as_dict() if self.scheduled is not None else {}),
            "tasks_sent": self.tasks,
            "tasks_applied_once": self.applied,
            "effect_total": self.total,
            "readings": self.readings,
            "failed_readings": self.failed_readings,
            "peak_workers": self.peak_workers,
            "first_worker_after_seconds": _round(self.first_worker_after_seconds),
            "first_consumed_after_seconds": _round(self.first_consumed_after_seconds),
            "drained_after_seconds": _round(self.drained_after_seconds),
            "scaled_in_after_seconds": _round(self.scaled_in_after_seconds),
            "pending_datapoints_in_cloudwatch": self.datapoints_in_cloudwatch,
            "cloudwatch_metrics": self.cloudwatch_metrics,
            "scale_ins_that_kept_a_busy_worker": self.scale_ins_that_kept_a_busy_worker,
            "ok": self.ok,
        }


def describe(params: ScalingParameters) -> str:
    steps = ", ".join(f">={s.pending_at_least}: +{s.add_tasks}" for s in params.scale_out_steps)
    return (
        f"out on pending per {params.scale_out_period_seconds} s period ({steps}; "
        f"cooldown {params.scale_out_cooldown_seconds} s), in after {params.scale_in_idle_seconds} s idle, "
        f"{params.min_tasks}..{params.max_tasks} workers"
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def source_checkout() -> Path:
    """The repository the worker runs from (`beatless local` needs a source checkout)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "worker" / "app.py").exists():
        raise RuntimeError(f"`beatless local` runs from a source checkout; no worker/ under {root}")
    return root


class LocalWorkers:
    """Celery worker processes standing in for the Fargate service's tasks.

    Scaling in stops the newest workers first, as ECS does, and never one that holds a task:
    with `presence` (each worker's own line, `beatless.workers.presence`), a worker that is busy
    or protected — or has not said yet — keeps running, as ECS keeps a task with scale-in
    protection, and the next decision tries again."""

    def __init__(
        self,
        env: dict[str, str],
        root: Path,
        logdir: Path,
        presence: Callable[[], list[Any]] | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.env = env
        self.log_level = log_level
        self.root = root
        self.logdir = logdir
        self.presence = presence
        self.running: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}  # pid -> the worker's node name
        self.started = 0
        self.stopped: list[str] = []
        self.kept_busy = 0  # scale-ins that left a busy worker running

    def scale_to(self, desired: int) -> None:
        self.running = [p for p in self.running if p.poll() is None]
        while len(self.running) < desired:
            self.started += 1
            name = f"local{self.started}"
            log = (self.logdir / f"{name}.log").open("ab")
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-n", f"{name}@%h",
                 "-l", self.log_level, "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            self.running.append(proc)
            self.names[proc.pid] = f"{name}@{socket.gethostname()}"
        if len(self.running) <= desired:
            return
        idle = self._idle()
        for proc in reversed(list(self.running)):  # newest first
            if len(self.running) <= desired:
                break
            name = self.names[proc.pid]
            if idle is not None and name not in idle:
                self.kept_busy += 1
                continue
            # SIGTERM is the worker's soft shutdown (as ECS stops a task).
            self.running.remove(proc)
            proc.send_signal(signal.SIGTERM)
            self.stopped.append(name)

    def _idle(self) -> set[str] | None:
        """The workers that said they hold nothing and are not protected (None: not asked)."""
        if self.presence is None:
            return None
        return {w.name for w in self.presence() if w.state == "idle" and w.protected is not True}

    def stop_all(self, timeout: float = 30.0) -> None:
        for proc in self.running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.running = []


def _ecs_service(ecs: Any) -> None:
    ecs.create_cluster(clusterName=ECS_CLUSTER)
    ecs.register_task_definition(
        family="beatless-worker", containerDefinitions=[{"name": "worker", "image": "local", "memory": 512}]
    )
    ecs.create_service(cluster=ECS_CLUSTER, serviceName=ECS_SERVICE, taskDefinition="beatless-worker")


def _scaling_reading(reading: Reading) -> ScalingReading:
    if reading.depth is None:
        return ScalingReading(at=reading.at.timestamp(), pending=None)
    return ScalingReading(
        at=reading.at.timestamp(),
        pending={q: d.pending for q, d in reading.depth.queues.items()},
        reserved={q: d.reserved for q, d in reading.depth.queues.items()},
    )


def _row(elapsed: float, reading: Reading, workers: int, decision: Decision) -> str:
    cells = []
    if reading.depth is None:
        cells.append("redis unreadable: no depth published")
    else:
        for depth in reading.depth.queues.values():
            backlog = depth.pending / max(workers, 1)
            cells.append(f"{'':>7} {depth.pending:4d} {depth.reserved:3d} {backlog:6.1f}")
    note = "" if decision.action == "hold" else f"  <- {decision.action}: {decision.reason}"
    return f"{elapsed:6.1f}s {workers:3d} | " + " | ".join(cells) + note


def run(options: LocalOptions, out: TextIO = sys.stdout) -> RunReport:
    """Run the local system until the burst is done (and scaled in); see the module docstring."""
    import boto3
    import redis

    root = source_checkout()
    params = ScalingParameters(**{**LOCAL_SCALING.__dict__, "max_tasks": options.max_workers})
    report = RunReport(tasks=options.tasks)
    out = cast(TextIO, LineWriter(out))  # the demo prints from its own thread
    with contextlib.ExitStack() as stack:
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="beatless-local-")))
        print("starting redis-server and a moto server (the AWS endpoint) ...", file=out, flush=True)
        broker = stack.enter_context(RedisServer())
        moto = stack.enter_context(MotoServer())
        database = _database(stack, out) if options.needs_database else None
        # This process's own AWS clients (the scheduled jobs', the task API's) reach moto.
        stack.enter_context(environ(dict(aws_environment(moto.url))))
        reset_clients()
        stack.callback(reset_clients)
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("AWS_", "BROKER_", "WORKER_", "ECS_", "REMAP_", "TASK_PROTECTION_"))
            },
            **aws_environment(moto.url),
            "BROKER_URL": broker.url,
            "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")]),
            "PYTHONUNBUFFERED": "1",
            # Short local stop timeout: a scaled-in worker is idle anyway.
            "WORKER_STOP_TIMEOUT_SECONDS": "30",
            "WORKER_SOFT_SHUTDOWN_SECONDS": "10",
            # Fresh lines: the scaler keeps a worker that holds a task (`LocalWorkers`).
            "WORKER_PRESENCE_SECONDS": "0.5",
        }
        session = boto3.Session(region_name=env["AWS_DEFAULT_REGION"])
        aws: dict[str, Any] = {
            name: session.client(
                name,
                endpoint_url=moto.url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            for name in ("cloudwatch", "ecs", "s3")
        }
        _ecs_service(aws["ecs"])
        plane = None
        if options.graph_nodes:
            plane = start_graph_plane(
                stack, aws_environment(moto.url), env, logdir, out, nodes=options.graph_nodes
            )
            report.graph_plane = plane.report
            env |= plane.worker_environment()
        if database is not None:
            env |= {"DATABASE_URL": database.dsn, "WORK_DIR": str(logdir)}
        monitor_env = {
            "BROKER_URL": broker.url,
            "QUEUES": "graph,ingest,default",
            "ECS_CLUSTER": ECS_CLUSTER,
            "ECS_SERVICE": ECS_SERVICE,
            "SAMPLE_INTERVAL_SECONDS": str(options.sample_interval_seconds),
        }
        broker_settings = BrokerSettings.from_env(monitor_env)
        monitor: Monitor = monitor_for(
            MonitorSettings.from_env(monitor_env),
            broker_for(broker_settings),
            cloudwatch=aws["cloudwatch"],
            ecs=aws["ecs"],
        )
        presence_client = redis.Redis.from_url(broker.url)
        stack.callback(presence_client.close)
        workers = LocalWorkers(env, root, logdir, presence=lambda: presence.read(presence_client))
        stack.callback(workers.stop_all)

        print(f"enqueueing {options.tasks} tasks across graph/ingest/default and 6 priority levels ...",
              file=out, flush=True)  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "worker.burst", "--tasks", str(options.tasks), "--steps",
             str(options.steps), "--step-seconds", str(options.step_seconds), "--subject", "local"],
            cwd=root, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(
            f"monitor every {options.sample_interval_seconds:g} s; scaling: {describe(params)}\n"
            f"{'time':>7} {'wkr':>3} | " + " | ".join(f"{q:>7} {'pend':>4} {'res':>3} {'b/wkr':>6}"
                                                  for q in broker_settings.queues),
            file=out, flush=True,
        )  # fmt: skip
        if options.task_api and database is not None:
            start_task_api(stack, env, out)
        background = []
        if options.schedule_speed and database is not None and plane is not None:
            system = _local_system(broker, database, plane, session, moto.url)
            window = timedelta(minutes=options.schedule_window_minutes)
            scheduled = ScheduledJobs(system, out, speed=options.schedule_speed, window=window).start()
            stack.callback(scheduled.close)
            report.scheduled = scheduled.report
            background.append(scheduled.thread)
        demo_thread = None
        if options.demo and database is not None and plane is not None:
            demo = _demo(stack, database, broker, plane, aws["s3"], out)
            report.demo = demo.report
            demo_thread = threading.Thread(target=demo.run, name="demo", daemon=True)
            demo_thread.start()
            background.append(demo_thread)
        _loop(options, params, monitor, workers, aws["ecs"], broker, report, out, background)
        if demo_thread is not None and demo_thread.is_alive():
            report.demo.error = report.demo.error or "unfinished when the run gave up"  # type: ignore[union-attr]
        client = redis.Redis.from_url(broker.url)
        report.applied = int(client.hlen(EFFECTS_APPLIED_KEY))
        report.total = int(client.hget(EFFECTS_TOTALS_KEY, "local") or 0)
        stats = aws["cloudwatch"].get_metric_statistics(
            Namespace=monitor.namespace,
            MetricName=metrics.PENDING_TASKS,
            Dimensions=[{"Name": metrics.QUEUE_DIMENSION, "Value": "graph"}],
            StartTime=datetime.now(UTC) - timedelta(hours=1),
            EndTime=datetime.now(UTC) + timedelta(minutes=1),
            Period=3600,
            Statistics=["SampleCount"],
        )
        report.datapoints_in_cloudwatch = int(sum(p["SampleCount"] for p in stats["Datapoints"]))
        report.cloudwatch_metrics = _metrics_by_namespace(aws["cloudwatch"])
        report.scale_ins_that_kept_a_busy_worker = workers.kept_busy
        client.close()
    summary = json.dumps(report.as_dict(), indent=2)
    print(summary, file=out, flush=True)
    if options.report_path is not None:
        options.report_path.write_text(summary + "\n")
    return report


class LineWriter:
    """A text stream that writes whole lines only, one thread at a time (the run's table and
    the demo's lines never cut into each other)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._partial = threading.local()

    def write(self, text: str) -> int:
        pending = getattr(self._partial, "text", "") + text
        lines, _, self._partial.text = pending.rpartition("\n")
        if lines:
            with self._lock:
                self._out.write(lines + "\n")
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._out.flush()


def _database(stack: contextlib.ExitStack, out: TextIO) -> PostgresServer:
    """A PostgreSQL server (stopped with `stack`) with the schema migrated."""
    import psycopg

    from beatless.db.migrate import migrate

    print("starting PostgreSQL (operations, credits) ...", file=out, flush=True)
    server = stack.enter_context(PostgresServer())
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        migrate(conn)
    return server


def _demo(
    stack: contextlib.ExitStack,
    database: PostgresServer,
    broker: RedisServer,
    plane: Any,
    s3: Any,
    out: TextIO,
) -> Demo:
    import psycopg
    import redis

    from beatless.local.graph_plane import UPLOADS_BUCKET

    conn = stack.enter_context(psycopg.connect(database.dsn, autocommit=True))
    client = redis.Redis.from_url(broker.url)
    stack.callback(client.close)
    return Demo(
        broker=client,
        database=conn,
        s3=s3,
        uploads_bucket=UPLOADS_BUCKET,
        registries=plane.registries,
        query=plane.query,
        out=out,
    )


def _metrics_by_namespace(cloudwatch: Any) -> dict[str, int]:
    """The custom metrics (name and dimension values) each namespace holds in (moto's) CloudWatch."""
    distinct: dict[str, set[tuple[str, frozenset[tuple[str, str]]]]] = {}
    for page in cloudwatch.get_paginator("list_metrics").paginate():
        for metric in page["Metrics"]:  # (moto lists a metric once per datapoint: counted once here)
            dimensions = frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
            distinct.setdefault(metric["Namespace"], set()).add((metric["MetricName"], dimensions))
    return {namespace: len(metrics) for namespace, metrics in sorted(distinct.items())}


def _local_system(
    broker: RedisServer, database: PostgresServer, plane: Any, session: Any, endpoint: str
) -> Any:
    """The local servers as the scheduled jobs' needs see them; the customer data bucket, a
    dead-letter queue per job, the Scheduler schedules and the secrets (the database's, the
    broker's AUTH token, the graph API key: the jobs get their ARNs) made in moto, as the
    stacks make them (`beatless.local.needs`)."""
    from beatless.jobs import JOBS
    from beatless.local import graph_plane
    from beatless.local.needs import (
        LocalSystem,
        create_dead_letter_queues,
        create_schedules,
        create_secrets,
        watched_jobs_json,
    )

    credentials = {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "endpoint_url": endpoint,
    }
    bucket = "beatless-local-customer-data"
    session.client("s3", **credentials).create_bucket(Bucket=bucket)
    functions = "arn:aws:lambda:us-east-1:123456789012:function:beatless-"
    role = "arn:aws:iam::123456789012:role/scheduler"
    dead_letters = create_dead_letter_queues(session.client("sqs", **credentials), JOBS)
    create_schedules(session.client("scheduler", **credentials), JOBS, functions, role, dead_letters)
    secretsmanager = session.client("secretsmanager", **credentials)
    held = create_secrets(secretsmanager, database=database, broker=broker, graph_api_key=plane.api_key)
    return LocalSystem(
        broker_url=broker.url,
        queues="graph,ingest,default",
        database_url=database.dsn,
        ecs_cluster=ECS_CLUSTER,
        ecs_service=ECS_SERVICE,
        storage_bucket=bucket,
        instance_table=graph_plane.INSTANCE_TABLE,
        graph_table=graph_plane.GRAPH_TABLE,
        graph_api_key=plane.api_key,
        uploads_bucket=graph_plane.UPLOADS_BUCKET,
        staging_bucket=graph_plane.BUCKET,
        backup_bucket=graph_plane.BACKUP_BUCKET,
        watched_jobs=watched_jobs_json(JOBS),
        secrets=held,
    )


def _loop(
    options: LocalOptions,
    params: ScalingParameters,
    monitor: Monitor,
    workers: LocalWorkers,
    ecs: Any,
    broker: RedisServer,
    report: RunReport,
    out: TextIO,
    background: list[threading.Thread],
) -> None:
    import redis

    client = redis.Redis.from_url(broker.url)
    start = time.monotonic()
    state = ScalingState()
    readings: list[ScalingReading] = []
    for tick in _grid(options.sample_interval_seconds, start, options.timeout_seconds):
        reading = monitor.reading()
        report.readings += 1
        report.failed_readings += 0 if reading.ok else 1
        readings = [*readings[-600:], _scaling_reading(reading)]
        decision = decide(params, readings, state, now=time.time())
        state = decision.state
        if decision.desired != len(workers.running):
            workers.scale_to(decision.desired)
            ecs.update_service(cluster=ECS_CLUSTER, service=ECS_SERVICE, desiredCount=decision.desired)
        if decision.action != "hold":
            report.decisions.append(f"{tick:.0f}s {decision.reason}")
        report.peak_workers = max(report.peak_workers, len(workers.running))
        if report.first_worker_after_seconds is None and workers.running:
            report.first_worker_after_seconds = tick
        if report.first_consumed_after_seconds is None and (
            (reading.depth is not None and any(d.reserved for d in reading.depth.queues.values()))
            or client.hlen(EFFECTS_APPLIED_KEY)
        ):
            report.first_consumed_after_seconds = tick
        print(_row(tick, reading, len(workers.running), decision), file=out, flush=True)
        idle = reading.depth is not None and all(d.total == 0 for d in reading.depth.queues.values())
        if (
            report.drained_after_seconds is None
            and idle
            and client.hlen(EFFECTS_APPLIED_KEY) >= options.tasks
            and not any(thread.is_alive() for thread in background)
        ):
            report.drained_after_seconds = tick
        if report.drained_after_seconds is not None:
            if not options.wait_for_scale_in:
                break
            if not workers.running:
                report.scaled_in_after_seconds = tick
                break
    else:
        print(f"gave up after {options.timeout_seconds:g} s", file=out, flush=True)
    client.close()


def _grid(interval: float, start: float, timeout: float, sleep: Callable[[float], None] = time.sleep
          ) -> Iterator[float]:  # fmt: skip
    """Elapsed times start, start + interval, ... until `timeout` (slots already past are skipped)."""
    slot = 0
    while slot * interval <= timeout:
        wait = start + slot * interval - time.monotonic()
        if wait > 0:
            sleep(wait)
        elif slot:
            slot = int((time.monotonic() - start) // interval) + 1
            continue
        yield slot * interval
        slot += 1
