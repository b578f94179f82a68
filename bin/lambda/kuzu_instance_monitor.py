"""kuzu_instance_monitor: the graph node registry kept true, graph capacity published.

Trigger: EventBridge Scheduler, on the schedules of the registry entry
`beatless.jobs.job("kuzu_instance_monitor")` — every 5 minutes `collect_metrics`,
hourly `health_check`, daily `cleanup_graphs`, each with its `action` in the
input — and an EventBridge rule on `EC2 Instance State-change Notification`
(a `health_check` of that instance only).
Side effects (rules in `beatless.graphs.monitor`): instances EC2 reports terminated
(or does not know) leave the instance registry and their graphs become
`orphaned`; stopped/stopping instances and running ones whose `/health` fails
become `unhealthy` (from their first failure; never deleted while EC2 says they
run), healthy ones `healthy` again (`draining` stays); graphs deleted more than
DELETED_GRAPH_RETENTION_DAYS ago and orphaned ones leave the graph registry.
Publishes AvailableSlots, UsedSlots, TotalCapacity, HealthyInstances,
UnhealthyInstances, InstancesPastGrace, GraphsRemoved, MonitorErrors and, per
instance, InstanceDatabaseCount and InstanceUtilization (METRICS_NAMESPACE,
default Beatless/Graph), and JobSucceeded (EMF, Beatless/Jobs). Raises at the
end of a run in which any step failed, after publishing.
Idempotency: each run sets the registry to what EC2 and the nodes say now.
Event: {"action": "health_check" | "collect_metrics" | "cleanup_graphs" |
"full_maintenance", "instance_id"?, "dry_run"?} plus the Scheduler fields, or the
EC2 state-change event.
"""

from __future__ import annotations

from functools import partial

from beatless.events import Option
from beatless.graphs.monitor import (
    MonitorSettings,
    monitor_graphs,
    parse_action,
    parse_instance_id,
    translate_event,
)
from beatless.jobs.entry import JobHandler

OPTIONS = {"action": Option(parse_action, required=True), "instance_id": Option(parse_instance_id)}

handler = JobHandler(
    "kuzu_instance_monitor",
    lambda env: partial(monitor_graphs, settings=MonitorSettings.from_env(env)),
    options=OPTIONS,
    translate=translate_event,
)
