"""The monthly cost of a deployment, line by line, beside the always-on Celery it replaces.

Counted from the registry: every schedule's fires in a 30-day month
(`beatless.jobs.schedules.fire_times`), each a Scheduler invocation and a Lambda request;
Lambda compute = fires x duration x the job's memory. The worker monitor's duration is its
sampling window (SAMPLES and SAMPLE_INTERVAL_SECONDS of its entry: it waits out the minute
to publish a reading every 10 s) in the minutes it is active — while workers are busy
(`worker_hours`, an upper bound when several run at once) and the scale-in window after each
of `bursts` — and IDLE_SAMPLES readings in the others, plus one woken run per burst
(`beatless.queues.wake`); every other job's is `job_seconds` (default 1 s; `beatless
local` prints the medians it measures, tens of milliseconds on its small data). The scaling
signal: the monitor's metrics (3 per queue and 4 more) and one PutMetricData per reading; the
scale-out alarm (Σ pending, one high-resolution metric per queue), the scale-in alarm (Σ
pending + reserved, two standard metrics per queue) and the heartbeat alarm. Observability:
the jobs' metrics (`metrics_per_job`, an assumption), four alarms per job, the task API's
three, the graph capacity alarm, the workers' CPU and memory alarms, the dashboards.
Workers: Fargate for `worker_hours` of busy workers. The always-on alternative: Celery beat
on a 0.25 vCPU / 0.5 GB Fargate service and one warm worker of the same size as Beatless',
both every hour of the month, compared with what Beatless runs on instead (schedules,
signal, workers): observability (metrics, alarms, dashboards) an always-on deployment needs
as well, so it is shown but left out of the ratio.

Each line has its list price and its price after AWS's always-free tier (applied per service,
in the order of the lines). The goals: the schedules and the scaling signal at most $10 a
month, and Beatless at least 10 times cheaper than always-on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from beatless.cost.prices import FREE, LIST, PRICES_AS_OF, REGION, SOURCES, FreeTier, Prices
from beatless.jobs import Job
from beatless.jobs.schedules import fire_times, parse_schedule
from beatless.monitor.settings import DEFAULT_SAMPLE_INTERVAL_SECONDS, DEFAULT_SAMPLES

HOURS_PER_MONTH = 730
MONTH_START = datetime(2027, 4, 1, tzinfo=UTC)  # a 30-day month, for counting fires
MONTH_DAYS = 30
SCHEDULES = "schedules and scaling signal"
OBSERVABILITY = "observability"
WORKERS = "workers"
MONITOR = "worker_monitor"
GOAL_SIGNAL_USD = 10.0
GOAL_RATIO = 10.0
# Errors, missed run, throttles and dead letters (infra.components.scheduled_job); the task API
# has 3, the graph plane's capacity 1, the worker service's CPU and memory 2.
ALARMS_PER_JOB = 4


@dataclass(frozen=True)
class Assumptions:
    job_seconds: float = 1.0  # a job's run, unless measured
    metrics_per_job: int = 6  # a job's custom metrics, unless measured
    seconds_by_job: dict[str, float] = field(default_factory=dict)  # measured (beatless local)
    metrics_by_job: dict[str, int] = field(default_factory=dict)  # measured (beatless local)
    worker_hours: float = 30.0
    bursts: int = 300  # arrivals of work after a quiet spell (10 a day): each wakes the monitor
    worker_vcpu: float = 1.0
    worker_gb: float = 2.0
    queues: int = 3
    dashboards: int = 3  # the workers', the graph plane's and the jobs'
    graph_metrics: int = 10  # what kuzu_instance_monitor puts (PutMetricData), unless measured


@dataclass(frozen=True)
class Line:
    part: str
    item: str
    quantity: float
    unit: str
    list_usd: float
    free_usd: float


@dataclass
class CostReport:
    assumptions: Assumptions
    lines: list[Line] = field(default_factory=list)
    always_on: list[Line] = field(default_factory=list)
    fires: dict[str, int] = field(default_factory=dict)

    def total(self, part: str | None = None, *, free: bool = False) -> float:
        chosen = [line for line in self.lines if part is None or line.part == part]
        return sum(line.free_usd if free else line.list_usd for line in chosen)

    def always_on_total(self) -> float:
        return sum(line.list_usd for line in self.always_on)

    def compared(self, *, free: bool = False) -> float:
        """What Beatless runs on instead of always-on Celery: schedules, signal and workers (its
        observability — metrics, alarms, dashboards — an always-on deployment needs as well)."""
        return self.total(SCHEDULES, free=free) + self.total(WORKERS, free=free)

    def ratio(self, *, free: bool = False) -> float:
        ours = self.compared(free=free)
        return self.always_on_total() / ours if ours else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": REGION,
            "prices_as_of": PRICES_AS_OF.isoformat(),
            "lines": [line.__dict__ for line in self.lines],
            "always_on": [line.__dict__ for line in self.always_on],
            "total_list_usd": round(self.total(), 2),
            "total_free_tier_usd": round(self.total(free=True), 2),
            "schedules_and_signal_list_usd": round(self.total(SCHEDULES), 2),
            "always_on_usd": round(self.always_on_total(), 2),
            "ratio_list": round(self.ratio(), 1),
            "ratio_free_tier": round(self.ratio(free=True), 1),
        }


def monthly_fires(jobs: tuple[Job, ...]) -> dict[str, int]:
    """Fires of each job (all its schedules) in a 30-day month."""
    end = MONTH_START + timedelta(days=MONTH_DAYS)
    return {
        job.name: sum(
            sum(
                1
                for _ in fire_times(
                    parse_schedule(s.expression, s.timezone), MONTH_START, end, anchor=MONTH_START
                )
            )
            for s in job.schedules
        )
        for job in jobs
    }


def measured(summary: dict[str, Any], defaults: Assumptions) -> Assumptions:
    """`defaults` with what a `beatless local --report` summary measured: each job's median run
    and the custom metrics it published (jobs that did not run keep the defaults)."""
    import dataclasses

    from beatless.graphs.monitor import DEFAULT_NAMESPACE as GRAPH_NAMESPACE

    medians = summary.get("scheduled_median_ms") or {}
    published = summary.get("scheduled_metrics_per_job") or {}
    put = summary.get("cloudwatch_metrics") or {}
    return dataclasses.replace(
        defaults,
        seconds_by_job={name: float(ms) / 1000 for name, ms in medians.items()},
        metrics_by_job={name: int(n) for name, n in published.items()},
        graph_metrics=int(put.get(GRAPH_NAMESPACE, defaults.graph_metrics)),
    )


SCALE_IN_WINDOW_MINUTES = 5  # pending + reserved = 0 this long before the service scales in


def monitor_seconds(job: Job, *, idle: bool = False) -> float:
    """The worker monitor's run: its readings spread over the minute (IDLE_SAMPLES of them when
    `idle`), plus the last one's work."""
    samples = int(job.environment.get("SAMPLES", DEFAULT_SAMPLES))
    if idle:
        samples = int(job.environment.get("IDLE_SAMPLES", samples))
    interval = float(job.environment.get("SAMPLE_INTERVAL_SECONDS", DEFAULT_SAMPLE_INTERVAL_SECONDS))
    return (samples - 1) * interval + 1.0


@dataclass(frozen=True)
class MonitorRuns:
    """The worker monitor's runs in a month: scheduled ones that sample the full grid (work or
    workers about), scheduled idle ones, and those producers woke."""

    active: int
    idle: int
    woken: int
    samples: int
    idle_samples: int

    @property
    def readings(self) -> int:
        return (self.active + self.woken) * self.samples + self.idle * self.idle_samples


def monitor_runs(job: Job, fires: int, a: Assumptions) -> MonitorRuns:
    samples = int(job.environment.get("SAMPLES", DEFAULT_SAMPLES))
    idle_samples = int(job.environment.get("IDLE_SAMPLES", samples))
    woken = a.bursts if idle_samples < samples else 0  # nobody wakes a monitor that never idles
    active = min(fires, round(a.worker_hours * 60 + a.bursts * SCALE_IN_WINDOW_MINUTES))
    return MonitorRuns(active, fires - active, woken, samples, idle_samples)


class _Free:
    """What is left of each always-free allowance as lines use it."""

    def __init__(self, tier: FreeTier) -> None:
        self.left: dict[str, float] = {name: float(value) for name, value in tier.__dict__.items()}

    def take(self, allowance: str, quantity: float) -> float:
        used = min(quantity, self.left[allowance])
        self.left[allowance] -= used
        return float(quantity - used)


def build(
    jobs: tuple[Job, ...],
    assumptions: Assumptions = Assumptions(),
    prices: Prices = LIST,
    tier: FreeTier = FREE,
) -> CostReport:
    a, p, free = assumptions, prices, _Free(tier)
    report = CostReport(assumptions=a, fires=monthly_fires(jobs))
    add = report.lines.append
    by_name = {job.name: job for job in jobs}
    runs = {name: float(report.fires[name]) for name in by_name}
    seconds = {name: a.seconds_by_job.get(name, a.job_seconds) for name in by_name}
    monitor = by_name.get(MONITOR)
    woken = None
    if monitor is not None:
        woken = monitor_runs(monitor, report.fires[MONITOR], a)
        full, idle = monitor_seconds(monitor), monitor_seconds(monitor, idle=True)
        runs[MONITOR] = float(woken.active + woken.idle + woken.woken)
        seconds[MONITOR] = ((woken.active + woken.woken) * full + woken.idle * idle) / runs[MONITOR]
    fires = sum(report.fires.values())
    requests = sum(runs.values())
    job_metrics = sum(a.metrics_by_job.get(name, a.metrics_per_job) for name in by_name)
    gb_seconds = sum(runs[n] * seconds[n] * by_name[n].memory_mb / 1024 for n in by_name)

    def line(part: str, item: str, quantity: float, unit: str, price: float, allowance: str | None) -> None:
        billable = free.take(allowance, quantity) if allowance else quantity
        add(
            Line(part, item, round(quantity, 1), unit, round(quantity * price, 4), round(billable * price, 4))
        )

    line(SCHEDULES, "EventBridge Scheduler invocations", fires, "invocations", p.scheduler_per_invocation,
         "scheduler_invocations")  # fmt: skip
    line(SCHEDULES, "Lambda requests (every job)", requests, "requests", p.lambda_per_request,
         "lambda_requests")  # fmt: skip
    line(
        SCHEDULES,
        "Lambda compute (every job)",
        gb_seconds,
        "GB-seconds",
        p.lambda_per_gb_second,
        "lambda_gb_seconds",
    )
    if woken is not None:
        line(
            SCHEDULES,
            "scaling signal: monitor metrics",
            3 * a.queues + 4,
            "metrics",
            p.metric_per_month,
            "metrics",
        )
        line(SCHEDULES, "scaling signal: PutMetricData", woken.readings, "requests",
             p.put_metric_data_per_request, "api_requests")  # fmt: skip
        line(SCHEDULES, "scaling signal: scale-out alarm (high resolution)", a.queues, "alarm metrics",
             p.alarm_high_resolution_per_month, "alarms")  # fmt: skip
        line(SCHEDULES, "scaling signal: scale-in and heartbeat alarms", 2 * a.queues + 1, "alarm metrics",
             p.alarm_standard_per_month, "alarms")  # fmt: skip
    line(OBSERVABILITY, "job metrics", job_metrics, "metrics", p.metric_per_month, "metrics")
    line(OBSERVABILITY, "graph plane metrics", a.graph_metrics, "metrics", p.metric_per_month, "metrics")
    line(OBSERVABILITY, "job, task API, graph and worker alarms", ALARMS_PER_JOB * len(jobs) + 3 + 1 + 2,
         "alarm metrics",
         p.alarm_standard_per_month, "alarms")  # fmt: skip
    line(OBSERVABILITY, "dashboards", a.dashboards, "dashboards", p.dashboard_per_month, "dashboards")
    line(WORKERS, "Fargate workers, busy hours", a.worker_hours, "task-hours",
         a.worker_vcpu * p.fargate_per_vcpu_hour + a.worker_gb * p.fargate_per_gb_hour, None)  # fmt: skip

    def fargate(item: str, vcpu: float, gb: float) -> Line:
        hourly = vcpu * p.fargate_per_vcpu_hour + gb * p.fargate_per_gb_hour
        cost = round(HOURS_PER_MONTH * hourly, 4)
        return Line("always-on", item, HOURS_PER_MONTH, "task-hours", cost, cost)

    report.always_on = [
        fargate("Celery beat (0.25 vCPU, 0.5 GB)", 0.25, 0.5),
        fargate(f"one warm worker ({a.worker_vcpu:g} vCPU, {a.worker_gb:g} GB)", a.worker_vcpu, a.worker_gb),
    ]
    return report


def render(report: CostReport, today: date | None = None) -> str:
    """The report as text: lines, totals, the always-on alternative, the goals."""
    rows = [
        f"Beatless monthly cost, {REGION}, list prices of {PRICES_AS_OF} (report of {today or date.today()})",
        f"assumptions: {report.assumptions}",
        "",
        f"{'part':<30} {'item':<50} {'quantity':>14} {'list $':>9} {'free-tier $':>12}",
    ]
    for line in report.lines:
        quantity = f"{line.quantity:,.0f} {line.unit}"
        rows.append(
            f"{line.part:<30} {line.item:<50} {quantity:>14} {line.list_usd:>9.2f} {line.free_usd:>12.2f}"
        )
    for part in (SCHEDULES, OBSERVABILITY, WORKERS):
        listed, after_free = report.total(part), report.total(part, free=True)
        rows.append(f"{'total: ' + part:<81} {'':>14} {listed:>9.2f} {after_free:>12.2f}")
    rows.append(f"{'total: Beatless':<81} {'':>14} {report.total():>9.2f} {report.total(free=True):>12.2f}")
    rows.append("")
    for line in report.always_on:
        rows.append(f"{'always-on':<30} {line.item:<50} {line.quantity:>11,.0f} h {line.list_usd:>9.2f}")
    rows.append(f"{'total: always-on':<81} {'':>14} {report.always_on_total():>9.2f}")
    rows.append("")
    signal, ratio, ratio_free = report.total(SCHEDULES), report.ratio(), report.ratio(free=True)
    rows.append(
        f"goal: schedules and scaling signal <= ${GOAL_SIGNAL_USD:g}/month: ${signal:.2f} at list prices "
        f"({'met' if signal <= GOAL_SIGNAL_USD else 'MISSED'}), ${report.total(SCHEDULES, free=True):.2f} "
        "after the free tier"
    )
    rows.append(
        f"compared with always-on: schedules, scaling signal and workers ${report.compared():.2f} "
        f"(${report.compared(free=True):.2f} after the free tier) against ${report.always_on_total():.2f}; "
        "observability is left out of both sides"
    )
    rows.append(
        f"goal: >= {GOAL_RATIO:g}x cheaper than always-on: {ratio:.1f}x at list prices "
        f"({'met' if ratio >= GOAL_RATIO else 'MISSED'}), {ratio_free:.1f}x after the free tier "
        f"({'met' if ratio_free >= GOAL_RATIO else 'MISSED'})"
    )
    rows.append("prices: " + "; ".join(SOURCES))
    return "\n".join(rows)
