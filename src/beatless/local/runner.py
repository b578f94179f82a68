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
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

from beatless import metrics
from beatless.aws import reset_clients
from beatless.errors import InvalidInputError
from beatless.local import watch
from beatless.local.demo import Demo, DemoReport
from beatless.local.graph_plane import GraphPlaneReport, start_graph_plane
from beatless.local.plot import Point, Timeline
from beatless.local.processes import ProcessTable
from beatless.local.scheduled import ScheduledJobs, ScheduleReport, start_task_api
from beatless.local.servers import MotoServer, PostgresServer, RedisServer, aws_environment, environ
from beatless.local.view import OPERATIONS_SHOWN, LiveView, QueueLine, Snapshot
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
    view: str = "plain"  # live: the terminal view (`beatless.local.view`); plain: a line per reading
    state_dir: Path = Path(".beatless-local")  # data, logs, pids.json and the plot of the run
    resume: bool = False  # carry on with the queues and the database the last run left
    plot: bool = True

    def __post_init__(self) -> None:
        from beatless.errors import InvalidInputError

        if self.view not in ("live", "plain"):
            raise InvalidInputError("--view", f"must be live or plain, got {self.view!r}")
        if self.resume and not (self.state_dir / "redis").is_dir():
            raise InvalidInputError("--resume", f"no earlier run to resume in {self.state_dir}")

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
    interrupted: bool = False
    resumed: bool = False
    plot_path: Path | None = None
    graph_plane: GraphPlaneReport | None = None
    demo: DemoReport | None = None
    scheduled: ScheduleReport | None = None

    @property
    def ok(self) -> bool:
        graphs_ok = self.graph_plane is None or self.graph_plane.ok
        demo_ok = self.demo is None or self.demo.ok
        scheduled_ok = self.scheduled is None or self.scheduled.ok
        tasks_ok = self.applied == self.tasks and self.total == self.tasks
        return tasks_ok and graphs_ok and demo_ok and scheduled_ok and not self.interrupted

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
            "resumed": self.resumed,
            "plot": None if self.plot_path is None else str(self.plot_path),
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
        started: Callable[[str, int], None] | None = None,
    ) -> None:
        self.on_started = started
        self.env = env
        self.log_level = log_level
        self.root = root
        self.logdir = logdir
        self.presence = presence
        self.running: list[subprocess.Popen[bytes]] = []
        self.stopping: list[subprocess.Popen[bytes]] = []  # scaled in, shutting down
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
            if self.on_started is not None:
                self.on_started(name, proc.pid)
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
            self.stopping.append(proc)
            self.stopped.append(name)

    def _idle(self) -> set[str] | None:
        """The workers that said they hold nothing and are not protected (None: not asked)."""
        if self.presence is None:
            return None
        return {w.name for w in self.presence() if w.state == "idle" and w.protected is not True}

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM to every running worker; wait for them and for those scaled in before."""
        for proc in self.running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in [*self.stopping, *self.running]:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.running, self.stopping = [], []


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


BURST_KEY = "beatless:local:burst"  # how many tasks this state directory's burst sent
# Stop as on Ctrl-C: `kill`, and the terminal closing (SIGHUP would end the run with no clean-up).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def run(options: LocalOptions, out: TextIO = sys.stdout) -> RunReport:
    """Run the local system until the burst is done (and scaled in); see the module docstring.

    Ctrl-C (or SIGTERM) stops every process the run started, by process id, and keeps the
    state directory: `resume=True` carries on with its queues and database."""
    report = RunReport(tasks=options.tasks, resumed=options.resume)
    timeline = Timeline()
    state = prepare_state(options.state_dir, resume=options.resume)
    for entry in state.leftovers:
        print(f"stopped {entry.name} (pid {entry.pid}), left running by an earlier run", file=out, flush=True)
    with contextlib.ExitStack() as stack:
        stack.callback(state.lock.close)
        stack.callback(state.processes.forget_stopped)  # last: after every process was stopped
        if threading.current_thread() is threading.main_thread():
            stack.callback(signal.signal, signal.SIGINT, signal.getsignal(signal.SIGINT))
            for signum in STOP_SIGNALS:
                stack.callback(signal.signal, signum, signal.signal(signum, _interrupt))
        view = None
        if options.view == "live":
            from rich.console import Console

            from beatless.local.view import LiveView

            # On a terminal, redrawn in place; into a file or a pipe, the last frame when it ends.
            console = Console(file=out, width=None if out.isatty() else 160)
            view = stack.enter_context(LiveView(console, state.dir / "run.log"))
        # Whole lines only: the demo and the jobs print from their own threads.
        lines = cast(TextIO, LineWriter(cast(TextIO, view) if view is not None else out))
        try:
            _run(options, state, stack, report, timeline, lines, view)
        except KeyboardInterrupt:
            report.interrupted = True
            if threading.current_thread() is threading.main_thread():
                # A second Ctrl-C must not cut the clean-up short (the handlers come back after it).
                for signum in (signal.SIGINT, *STOP_SIGNALS):
                    signal.signal(signum, signal.SIG_IGN)
    if timeline.points and options.plot:
        from beatless.local.plot import plot_png

        report.plot_path = plot_png(timeline, state.dir / "beatless-local.png")
    if report.interrupted:
        print(
            f"interrupted: every process this run started was stopped by its pid; the state is kept in "
            f"{state.dir}: `beatless local --resume` carries on with its queues and database, "
            "`beatless local` starts clean",
            file=out,
            flush=True,
        )
    summary = json.dumps(report.as_dict(), indent=2)
    print(summary, file=out, flush=True)
    if report.plot_path is not None:
        print(f"plot of queue depth and workers: {report.plot_path}", file=out, flush=True)
    if options.report_path is not None:
        options.report_path.write_text(summary + "\n")
    return report


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class LocalState:
    """The state directory of local runs: `redis/` and the database (kept for --resume),
    `graph-plane/` and `logs/` (this run's), `pids.json`, the plot."""

    dir: Path
    processes: ProcessTable
    leftovers: list[Any]
    lock: Any = None  # the open lock file: the directory is this run's while it is open

    @property
    def database_dir(self) -> Path:
        return database_dir(self.dir)


def database_home(state_dir: Path) -> Path:
    """The directory that holds the PostgreSQL cluster of `state_dir` (`postgres/`): `state_dir`;
    as root, a directory under /tmp named after it: the server runs as the postgres user
    (initdb refuses root), who cannot reach into root's home."""
    state_dir = state_dir.resolve()
    if os.geteuid() != 0:
        return state_dir
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"beatless-local-{digest}"


def database_dir(state_dir: Path) -> Path:
    """The cluster's directory, its home made (private, checked) when it is under /tmp."""
    home = database_home(state_dir)
    return (home if home == state_dir.resolve() else _private_dir(home)) / "postgres"


STATE_MARK = ".beatless-local"  # in a directory `beatless local` made its state directory


def _private_dir(path: Path) -> Path:
    """`path`, a directory root made (others may pass through it, not list it); refuses one
    anybody else made or a symbolic link (/tmp is shared)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o711)
    found = path.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        raise InvalidInputError("--state-dir", f"{path} exists and is not a directory of this user's")
    path.chmod(0o711)
    return path


def prepare_state(directory: Path, *, resume: bool) -> LocalState:
    """Lock the state directory, stop what an earlier run left running (by pid); start
    clean unless `resume`. Refuses a non-empty directory it did not make (it deletes in it)."""
    directory.mkdir(parents=True, exist_ok=True)
    mark = directory / STATE_MARK
    if not mark.exists():
        if any(directory.iterdir()):
            raise InvalidInputError(
                "--state-dir", f"{directory} is not empty and not a state directory of `beatless local`"
            )
        mark.write_text("the state of `beatless local` runs: data, logs, pids.json, the plot\n")
    lock = (directory / ".lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise InvalidInputError("--state-dir", f"another `beatless local` runs on {directory}") from None
    processes = ProcessTable(directory)
    state = LocalState(directory.resolve(), processes, processes.stop_leftovers(), lock)
    clear = [directory / "graph-plane", directory / "logs"]
    if not resume:
        clear += [directory / "redis", database_home(directory) / "postgres"]
    for path in clear:
        shutil.rmtree(path, ignore_errors=True)
    for name in ("logs", "graph-plane"):
        (directory / name).mkdir()
    return state


def _run(
    options: LocalOptions,
    state: LocalState,
    stack: contextlib.ExitStack,
    report: RunReport,
    timeline: Timeline,
    out: TextIO,
    view: Any,
) -> None:
    import boto3
    import redis

    root = source_checkout()
    params = ScalingParameters(**{**LOCAL_SCALING.__dict__, "max_tasks": options.max_workers})
    logdir = state.dir / "logs"
    track = state.processes.add
    print("starting redis-server and a moto server (the AWS endpoint) ...", file=out, flush=True)
    broker = stack.enter_context(RedisServer(data_dir=state.dir / "redis"))
    track("redis-server", broker.proc.pid)  # type: ignore[union-attr]
    moto = stack.enter_context(MotoServer())
    track("moto-server", moto.proc.pid)  # type: ignore[union-attr]
    database = _database(stack, out, state) if options.needs_database else None
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
            stack, aws_environment(moto.url), env, state.dir / "graph-plane", out,
            nodes=options.graph_nodes, started=track,
        )  # fmt: skip
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
    client = redis.Redis.from_url(broker.url)
    stack.callback(client.close)
    workers = LocalWorkers(env, root, logdir, presence=lambda: presence.read(client), started=track)
    stack.callback(workers.stop_all)

    raw: Any = client.get(BURST_KEY)
    sent = raw.decode() if isinstance(raw, bytes) else raw
    if options.resume and sent is not None and sent.startswith("sending"):
        raise InvalidInputError(
            "--resume", "the earlier run was stopped while it sent its burst (part of it went): start clean"
        )
    if options.resume and sent is not None:
        report.tasks = int(sent)
        print(
            f"resuming: {report.tasks} tasks were sent by the earlier run, "
            f"{client.hlen(EFFECTS_APPLIED_KEY)} applied so far; the rest is still queued",
            file=out,
            flush=True,
        )
    else:
        print(f"enqueueing {options.tasks} tasks across graph/ingest/default and 6 priority levels ...",
              file=out, flush=True)  # fmt: skip
        client.set(BURST_KEY, f"sending {options.tasks}")
        subprocess.run(
            [sys.executable, "-m", "worker.burst", "--tasks", str(options.tasks), "--steps",
             str(options.steps), "--step-seconds", str(options.step_seconds), "--subject", "local"],
            cwd=root, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client.set(BURST_KEY, options.tasks)
    print(f"monitor every {options.sample_interval_seconds:g} s; scaling: {describe(params)}",
          file=out, flush=True)  # fmt: skip
    if view is None:  # the header of a line per reading
        columns = " | ".join(f"{q:>7} {'pend':>4} {'res':>3} {'b/wkr':>6}" for q in broker_settings.queues)
        print(f"{'time':>7} {'wkr':>3} | {columns}", file=out, flush=True)
    if options.task_api and database is not None:
        start_task_api(stack, env, out)
    background = []
    scheduled = None
    if options.schedule_speed and database is not None and plane is not None:
        system = _local_system(broker, database, plane, session, moto.url)
        window = timedelta(minutes=options.schedule_window_minutes)
        scheduled = ScheduledJobs(system, out, speed=options.schedule_speed, window=window).start()
        stack.callback(scheduled.close)
        report.scheduled = scheduled.report
        background.append(scheduled.thread)
    demo_thread = None
    if options.demo and database is not None and plane is not None and options.resume:
        print(
            "the demo is not resumed: its graphs live in moto and on the graph nodes, which start "
            "fresh (run without --resume for it)",
            file=out,
            flush=True,
        )
    elif options.demo and database is not None and plane is not None:
        demo = _demo(stack, database, broker, plane, aws["s3"], out)
        report.demo = demo.report
        demo_thread = threading.Thread(target=demo.run, name="demo", daemon=True)
        demo_thread.start()
        background.append(demo_thread)
    watcher = _Watcher(stack, database, client, scheduled)
    _loop(options, params, monitor, workers, aws["ecs"], client, report, out,
          background, watcher, view, timeline)  # fmt: skip
    if demo_thread is not None and demo_thread.is_alive():
        report.demo.error = report.demo.error or "unfinished when the run gave up"  # type: ignore[union-attr]
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


class _Watcher:
    """What the live view adds to each reading: job runs, operations, credits."""

    def __init__(
        self, stack: contextlib.ExitStack, database: PostgresServer | None, broker: Any, scheduled: Any
    ) -> None:
        import psycopg

        self.broker, self.scheduled = broker, scheduled
        self.conn = None
        if database is not None:
            self.conn = stack.enter_context(psycopg.connect(database.dsn, autocommit=True))

    def snapshot(self, base: Snapshot) -> Snapshot:
        from beatless.local import watch

        extra: dict[str, Any] = {}
        if self.scheduled is not None:
            clock = min(self.scheduled.clock.now(), self.scheduled.end)
            extra |= {"jobs": self.scheduled.status(), "clock": clock}
        if self.conn is not None:
            extra |= {
                "operations": watch.operations(self.conn, self.broker, OPERATIONS_SHOWN),
                "credits": watch.credits(self.conn),
            }
        return replace(base, **extra)


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


def _database(stack: contextlib.ExitStack, out: TextIO, state: LocalState) -> PostgresServer:
    """A PostgreSQL server (stopped with `stack`) with the schema migrated."""
    import psycopg

    from beatless.db.migrate import migrate

    print("starting PostgreSQL (operations, credits) ...", file=out, flush=True)
    server = stack.enter_context(PostgresServer(base=state.database_dir))
    if server.pid is not None:
        state.processes.add("postgres", server.pid, signal.SIGINT)
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
    client: Any,
    report: RunReport,
    out: TextIO,
    background: list[threading.Thread],
    watcher: _Watcher,
    view: LiveView | None,
    timeline: Timeline,
) -> None:
    start = time.monotonic()
    state = ScalingState()
    readings: list[ScalingReading] = []
    last_decision = None
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
            last_decision = f"{tick:.0f} s {decision.action}: {decision.reason}"
        report.peak_workers = max(report.peak_workers, len(workers.running))
        if report.first_worker_after_seconds is None and workers.running:
            report.first_worker_after_seconds = tick
        if report.first_consumed_after_seconds is None and (
            (reading.depth is not None and any(d.reserved for d in reading.depth.queues.values()))
            or client.hlen(EFFECTS_APPLIED_KEY)
        ):
            report.first_consumed_after_seconds = tick
        depth = reading.depth.queues if reading.depth is not None else {}
        timeline.add(
            Point(
                elapsed=tick,
                pending={q: d.pending for q, d in depth.items()},
                reserved={q: d.reserved for q, d in depth.items()},
                running=len(workers.running),
                desired=decision.desired,
            )
        )
        if view is None:
            print(_row(tick, reading, len(workers.running), decision), file=out, flush=True)
        else:
            view.show(watcher.snapshot(_snapshot(tick, reading, workers, decision.desired, last_decision)))
        idle = reading.depth is not None and all(d.total == 0 for d in reading.depth.queues.values())
        if (
            report.drained_after_seconds is None
            and idle
            and client.hlen(EFFECTS_APPLIED_KEY) >= report.tasks
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


def _snapshot(
    tick: float, reading: Reading, workers: LocalWorkers, desired: int, decision: str | None
) -> Snapshot:
    depth = reading.depth.queues if reading.depth is not None else {}
    names = [workers.names[proc.pid] for proc in workers.running]
    return Snapshot(
        elapsed=tick,
        desired=desired,
        queues=tuple(QueueLine(q, d.pending, d.reserved) for q, d in depth.items()),
        workers=watch.workers(names, workers.presence() if workers.presence is not None else []),
        decision=decision,
        redis_readable=reading.depth is not None,
    )


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
