"""The `kuzu_instance_monitor` job's core: keep the instance registry true, count capacity.

Actions (the event's `action`; an EC2 state-change notification runs `health_check`
for its instance only):

- `health_check`: every registered instance (one, for a state change) is checked
  against EC2 (`DescribeInstances` with an `instance-id` filter, 200 ids a call,
  paginated: an unknown id does not fail the call) and, when EC2 says it runs,
  against its `/health` (3 s at most, 16 at a time, the API key in `X-Api-Key`):
  - `terminated`, or unknown to EC2: the row leaves the registry and its placed
    graphs become `orphaned` (if orphaning fails the row stays for the next run);
  - `shutting-down`, `stopping`, `stopped`, or running with a failing `/health`
    (an error status, a timeout, a refused connection): `unhealthy`, with
    `unhealthy_since` = the first failure, kept across later failures;
  - running with a healthy `/health`: `healthy` again — but `draining` stays
    `draining`; `pending` leaves the status as it is;
  - one transient failure deletes nothing: only EC2 saying `terminated` (or not
    knowing the id) removes a row. An instance unhealthy for longer than the
    grace period is counted (`InstancesPastGrace`) and listed under `past_grace`
    for an operator or the group to replace — never deleted while EC2 says it runs.
- `collect_metrics`: over healthy instances only (`draining` and `unhealthy` take
  no new graphs) `AvailableSlots` = Σ (capacity - database_count), `UsedSlots`,
  `TotalCapacity`; `HealthyInstances`, `UnhealthyInstances`; per instance
  (dimension `InstanceId`) `InstanceDatabaseCount` and `InstanceUtilization`
  (database_count ÷ capacity, percent). The group scales out on `AvailableSlots`.
- `cleanup_graphs`: graphs `deleted` longer ago than the retention, and `orphaned`
  graphs, leave the graph registry.
- `full_maintenance`: the three, in that order.

A failure in one instance's check does not stop the others; a step that failed
(any AWS error, any orphaning that did not happen) raises at the end of the run,
after `MonitorErrors` and the other metrics were published. A dry run writes
nothing to the registries and reports what it would change; metrics are still
published.
"""

from __future__ import annotations

import enum
import http.client
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from beatless.errors import BeatlessError, InvalidInputError
from beatless.events import parse_timestamp
from beatless.graphs.registry import PLACED_STATUSES, Graph, GraphStatus, Instance, InstanceStatus, Registries
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.settings import Env, env_int, env_str
from beatless.timestamps import iso_z

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "Beatless/Graph"
HEALTH_TIMEOUT_SECONDS = 3.0
HEALTH_CONCURRENCY = 16
EC2_FILTER_VALUES = 200  # DescribeInstances takes at most 200 values per filter
EC2_MAX_RESULTS = 1000
MAX_METRICS_PER_CALL = 1000
EC2_STATE_CHANGE = "EC2 Instance State-change Notification"

# Metric names (the graph stack's alarms and dashboard are built from these).
AVAILABLE_SLOTS = "AvailableSlots"
USED_SLOTS = "UsedSlots"
TOTAL_CAPACITY = "TotalCapacity"
HEALTHY_INSTANCES = "HealthyInstances"
UNHEALTHY_INSTANCES = "UnhealthyInstances"
INSTANCES_PAST_GRACE = "InstancesPastGrace"
INSTANCE_DATABASE_COUNT = "InstanceDatabaseCount"
INSTANCE_UTILIZATION = "InstanceUtilization"
INSTANCE_DIMENSION = "InstanceId"
GRAPHS_REMOVED = "GraphsRemoved"
MONITOR_ERRORS = "MonitorErrors"


class Action(enum.StrEnum):
    HEALTH_CHECK = "health_check"
    COLLECT_METRICS = "collect_metrics"
    CLEANUP_GRAPHS = "cleanup_graphs"
    FULL_MAINTENANCE = "full_maintenance"


STEPS = {
    Action.HEALTH_CHECK: (Action.HEALTH_CHECK,),
    Action.COLLECT_METRICS: (Action.COLLECT_METRICS,),
    Action.CLEANUP_GRAPHS: (Action.CLEANUP_GRAPHS,),
    Action.FULL_MAINTENANCE: (Action.HEALTH_CHECK, Action.COLLECT_METRICS, Action.CLEANUP_GRAPHS),
}


class MaintenanceFailedError(BeatlessError):
    """At least one step failed; the others ran, and the metrics were published."""

    def __init__(self, failures: Sequence[str], details: Mapping[str, Any]) -> None:
        super().__init__(f"{len(failures)} failure(s): " + "; ".join(failures[:10]))
        self.failures = list(failures)
        self.details = dict(details)


@dataclass(frozen=True)
class MonitorSettings:
    instance_table: str
    graph_table: str
    namespace: str = DEFAULT_NAMESPACE
    asg_name: str | None = None
    unhealthy_grace: timedelta = timedelta(seconds=900)
    deleted_retention: timedelta = timedelta(days=7)

    @classmethod
    def from_env(cls, env: Env) -> MonitorSettings:
        instance_table = env_str(env, "INSTANCE_REGISTRY_TABLE", required=True)
        graph_table = env_str(env, "GRAPH_REGISTRY_TABLE", required=True)
        assert instance_table is not None and graph_table is not None
        return cls(
            instance_table=instance_table,
            graph_table=graph_table,
            namespace=env_str(env, "METRICS_NAMESPACE", DEFAULT_NAMESPACE) or DEFAULT_NAMESPACE,
            asg_name=env_str(env, "GRAPH_ASG_NAME"),
            unhealthy_grace=timedelta(
                seconds=env_int(env, "UNHEALTHY_GRACE_SECONDS", 900, minimum=0, maximum=7 * 86_400)
            ),
            deleted_retention=timedelta(
                days=env_int(env, "DELETED_GRAPH_RETENTION_DAYS", 7, minimum=0, maximum=3650)
            ),
        )


def parse_action(name: str, value: Any) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise InvalidInputError(
            name, f"must be one of {', '.join(a.value for a in Action)}, got {value!r}"
        ) from None


def translate_event(event: Any) -> Any:
    """An EventBridge `EC2 Instance State-change Notification` becomes a health check of
    its instance; anything else is the scheduled event, parsed by the job runtime."""
    if not isinstance(event, Mapping) or event.get("detail-type") != EC2_STATE_CHANGE:
        return event
    if event.get("source") != "aws.ec2":
        raise InvalidInputError(
            "source", f"an {EC2_STATE_CHANGE} comes from aws.ec2, got {event.get('source')!r}"
        )
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise InvalidInputError("detail", "must be an object")
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str) or not instance_id.startswith("i-"):
        raise InvalidInputError("detail.instance-id", f"must be an EC2 instance id, got {instance_id!r}")
    state = detail.get("state")
    if not isinstance(state, str) or not state:
        raise InvalidInputError("detail.state", f"must be an EC2 instance state, got {state!r}")
    translated: dict[str, Any] = {"action": str(Action.HEALTH_CHECK), "instance_id": instance_id}
    if "time" in event:
        translated["scheduled_time"] = iso_z(parse_timestamp("time", event["time"]))
    if "dry_run" in event:  # not in EventBridge's events; a console tester may add it
        translated["dry_run"] = event["dry_run"]
    return translated


def parse_instance_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidInputError(name, f"must be an instance id, got {value!r}")
    return value


# -- /health ---------------------------------------------------------------------------------

HealthCheck = Callable[[Instance], str | None]  # None: healthy; otherwise what failed


def http_health(api_key: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> HealthCheck:
    """GET <endpoint>/health with the key; healthy = 200 and `"status": "healthy"`."""

    def check(instance: Instance) -> str | None:
        parts = urlsplit(instance.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"no usable endpoint {instance.endpoint!r}"
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = kind(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("GET", "/health", headers={"X-Api-Key": api_key})
            response = conn.getresponse()
            body = response.read(65_536)
            if response.status != 200:
                return f"/health answered {response.status}"
            status = json.loads(body).get("status")
            return None if status == "healthy" else f"/health says {status!r}"
        except (OSError, http.client.HTTPException, ValueError) as error:
            return f"/health failed: {type(error).__name__}: {error}"
        finally:
            conn.close()

    return check


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Report:
    """What a run found and did (or, in a dry run, would do)."""

    checked: int = 0
    healthy: list[str] = field(default_factory=list)
    marked_unhealthy: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    orphaned_graphs: list[str] = field(default_factory=list)
    past_grace: list[str] = field(default_factory=list)
    graphs_removed: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    per_instance: dict[str, tuple[float, float]] = field(default_factory=dict)  # (databases, utilization %)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "healthy": len(self.healthy),
            "marked_unhealthy": sorted(self.marked_unhealthy),
            "recovered": sorted(self.recovered),
            "removed": sorted(self.removed),
            "orphaned_graphs": len(self.orphaned_graphs),
            "past_grace": sorted(self.past_grace),
            "graphs_removed": len(self.graphs_removed),
            "metrics": self.metrics,
            "errors": len(self.failures),
        }


@dataclass(frozen=True)
class Clients:
    registries: Registries
    ec2: Any
    cloudwatch: Any
    health: HealthCheck


def maintain(
    clients: Clients,
    settings: MonitorSettings,
    action: Action,
    *,
    now: datetime,
    dry_run: bool,
    instance_id: str | None = None,
) -> Report:
    """Run `action`'s steps (see the module docstring). Raises `MaintenanceFailedError`."""
    report = Report()
    for step in STEPS[action]:
        try:
            if step is Action.HEALTH_CHECK:
                health_check(clients, settings, report, now=now, dry_run=dry_run, only=instance_id)
            elif step is Action.COLLECT_METRICS:
                collect_metrics(clients, settings, report)
            else:
                cleanup_graphs(clients, settings, report, now=now, dry_run=dry_run)
        except (ClientError, BotoCoreError) as error:
            report.failures.append(f"{step}: {error}")
    data = _run_metrics(report, action, whole_fleet=instance_id is None)
    _publish(clients.cloudwatch, settings.namespace, data, now)
    if report.failures:
        raise MaintenanceFailedError(report.failures, report.as_dict())
    return report


def health_check(
    clients: Clients,
    settings: MonitorSettings,
    report: Report,
    *,
    now: datetime,
    dry_run: bool,
    only: str | None,
) -> None:
    registries = clients.registries
    if only is not None:
        one = registries.instance(only)
        instances = [one] if one is not None else []
    else:
        instances = list(registries.all_instances())
    report.checked = len(instances)
    if not instances:
        return
    states = ec2_states(clients.ec2, [i.instance_id for i in instances])
    running = [i for i in instances if states.get(i.instance_id) == "running"]
    with ThreadPoolExecutor(max_workers=HEALTH_CONCURRENCY) as pool:
        verdicts = dict(zip((i.instance_id for i in running), pool.map(clients.health, running), strict=True))
    for instance in instances:
        state = states.get(instance.instance_id)
        try:
            _judge(
                clients, settings, report, instance, state, verdicts.get(instance.instance_id), now, dry_run
            )
        except (ClientError, BotoCoreError) as error:
            report.failures.append(f"{instance.instance_id}: {error}")


def _judge(
    clients: Clients,
    settings: MonitorSettings,
    report: Report,
    instance: Instance,
    state: str | None,
    problem: str | None,
    now: datetime,
    dry_run: bool,
) -> None:
    registries = clients.registries
    if state in (None, "terminated"):
        _remove(registries, report, instance, dry_run)
        return
    if state == "pending":
        return  # booting: whatever it was, it stays
    if state == "running" and problem is None:
        if instance.status is InstanceStatus.UNHEALTHY:
            report.recovered.append(instance.instance_id)
            if not dry_run:
                _set_status(registries, instance.instance_id, InstanceStatus.HEALTHY, since=None)
        if instance.status is not InstanceStatus.DRAINING:
            report.healthy.append(instance.instance_id)
        return
    reason = problem if state == "running" else f"EC2 state {state}"
    since = instance.unhealthy_since or iso_z(now)
    if instance.status is not InstanceStatus.UNHEALTHY:
        report.marked_unhealthy.append(instance.instance_id)
        log.warning("instance %s unhealthy: %s", instance.instance_id, reason)
        if not dry_run:
            _set_status(registries, instance.instance_id, InstanceStatus.UNHEALTHY, since=since)
    if now - parse_timestamp("unhealthy_since", since) > settings.unhealthy_grace:
        report.past_grace.append(instance.instance_id)


def _remove(registries: Registries, report: Report, instance: Instance, dry_run: bool) -> None:
    """Its graphs orphaned first; the row goes only when that worked (else: the next run)."""
    placed = [g for g in registries.graphs_on(instance.instance_id) if g.status in PLACED_STATUSES]
    report.orphaned_graphs.extend(g.graph_id for g in placed)
    report.removed.append(instance.instance_id)
    if dry_run:
        return
    for graph in placed:
        registries.graphs.update_item(
            Key={"graph_id": graph.graph_id},
            UpdateExpression="SET #s = :orphaned",
            ConditionExpression="instance_id = :i",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":orphaned": str(GraphStatus.ORPHANED), ":i": instance.instance_id},
        )
    registries.instances.delete_item(Key={"instance_id": instance.instance_id})


def _set_status(
    registries: Registries, instance_id: str, status: InstanceStatus, *, since: str | None
) -> None:
    if since is None:
        update, values = "SET #s = :s REMOVE unhealthy_since", {":s": str(status)}
    else:
        update, values = "SET #s = :s, unhealthy_since = :since", {":s": str(status), ":since": since}
    registries.instances.update_item(
        Key={"instance_id": instance_id},
        UpdateExpression=update,
        ConditionExpression="attribute_exists(instance_id)",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=values,
    )


def ec2_states(ec2: Any, instance_ids: Sequence[str]) -> dict[str, str]:
    """Instance id -> EC2 state name, for the ids EC2 knows (filters: an unknown id is absent,
    where `InstanceIds` would fail the whole call). 200 ids a call, every page read."""
    states: dict[str, str] = {}
    paginator = ec2.get_paginator("describe_instances")
    for start in range(0, len(instance_ids), EC2_FILTER_VALUES):
        batch = list(instance_ids[start : start + EC2_FILTER_VALUES])
        pages = paginator.paginate(
            Filters=[{"Name": "instance-id", "Values": batch}],
            # With filters EC2 may cut pages short; 1,000 (its maximum) keeps a batch to one page.
            PaginationConfig={"PageSize": EC2_MAX_RESULTS},
        )
        for page in pages:
            for reservation in page.get("Reservations", []):
                for found in reservation.get("Instances", []):
                    states[found["InstanceId"]] = found["State"]["Name"]
    return states


def collect_metrics(clients: Clients, settings: MonitorSettings, report: Report) -> None:
    instances = list(clients.registries.all_instances())
    healthy = [i for i in instances if i.status is InstanceStatus.HEALTHY]
    report.metrics.update(
        {
            AVAILABLE_SLOTS: float(sum(i.free_slots for i in healthy)),
            USED_SLOTS: float(sum(i.database_count for i in healthy)),
            TOTAL_CAPACITY: float(sum(i.capacity for i in healthy)),
            HEALTHY_INSTANCES: float(len(healthy)),
            UNHEALTHY_INSTANCES: float(sum(i.status is InstanceStatus.UNHEALTHY for i in instances)),
        }
    )
    for instance in instances:
        utilization = 100.0 * instance.database_count / instance.capacity if instance.capacity else 0.0
        report.per_instance[instance.instance_id] = (float(instance.database_count), utilization)


def cleanup_graphs(
    clients: Clients, settings: MonitorSettings, report: Report, *, now: datetime, dry_run: bool
) -> None:
    cutoff = now - settings.deleted_retention
    doomed: list[Graph] = []
    for graph in clients.registries.all_graphs():
        expired = (
            graph.status is GraphStatus.DELETED
            and graph.deleted_at is not None
            and parse_timestamp("deleted_at", graph.deleted_at) <= cutoff
        )
        if graph.status is GraphStatus.ORPHANED or expired:
            doomed.append(graph)
    for graph in doomed:
        if not dry_run:
            clients.registries.graphs.delete_item(
                Key={"graph_id": graph.graph_id},
                ConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": str(graph.status)},
            )
        report.graphs_removed.append(graph.graph_id)


def _run_metrics(report: Report, action: Action, *, whole_fleet: bool = True) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = [
        {"MetricName": name, "Value": value, "Unit": "Count"} for name, value in report.metrics.items()
    ]
    if Action.HEALTH_CHECK in STEPS[action] and whole_fleet:  # one instance's check says nothing of the rest
        data.append(
            {"MetricName": INSTANCES_PAST_GRACE, "Value": float(len(report.past_grace)), "Unit": "Count"}
        )
    if Action.CLEANUP_GRAPHS in STEPS[action]:
        data.append(
            {"MetricName": GRAPHS_REMOVED, "Value": float(len(report.graphs_removed)), "Unit": "Count"}
        )
    for instance_id, (count, utilization) in report.per_instance.items():
        dims = [{"Name": INSTANCE_DIMENSION, "Value": instance_id}]
        data.append(
            {"MetricName": INSTANCE_DATABASE_COUNT, "Dimensions": dims, "Value": count, "Unit": "Count"}
        )
        data.append(
            {"MetricName": INSTANCE_UTILIZATION, "Dimensions": dims, "Value": utilization, "Unit": "Percent"}
        )
    data.append({"MetricName": MONITOR_ERRORS, "Value": float(len(report.failures)), "Unit": "Count"})
    return data


def _publish(cloudwatch: Any, namespace: str, data: Iterable[dict[str, Any]], at: datetime) -> None:
    items = [{**item, "Timestamp": at} for item in data]
    for start in range(0, len(items), MAX_METRICS_PER_CALL):
        cloudwatch.put_metric_data(
            Namespace=namespace, MetricData=items[start : start + MAX_METRICS_PER_CALL]
        )


def monitor_graphs(ctx: JobContext, settings: MonitorSettings) -> JobOutcome:
    """The work of one `kuzu_instance_monitor` run, on the job runtime."""
    registries = Registries(ctx.dynamodb(), settings.instance_table, settings.graph_table)
    clients = Clients(registries, ctx.ec2(), ctx.cloudwatch(), http_health(ctx.graph_api_key()))
    action: Action = ctx.options["action"]
    report = maintain(
        clients, settings, action, now=ctx.as_of, dry_run=ctx.dry_run, instance_id=ctx.options["instance_id"]
    )
    return JobOutcome(remaining=None, details={"action": str(action), **report.as_dict()})
