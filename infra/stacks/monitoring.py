"""The monitoring stack: the alarm topic, the stale-heartbeat alarm and the dashboard.

It references no other stack's resources (only names and metric constants),
so every other stack can send its alarms here.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from infra.components.alarm_topic import AlarmTopic
from infra.components.monitor_health import MonitorHealth
from infra.components.worker_dashboard import WorkerDashboard
from infra.config import Config


class MonitoringStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: Config, **kwargs: Any):
        super().__init__(scope, id, **kwargs)
        self.alarms = AlarmTopic(self, "Alarms", email=config.alarm_email)
        self.monitor_health = MonitorHealth(
            self,
            "MonitorHealth",
            namespace=config.metrics_namespace,
            scaling=config.worker.scaling,
            topic=self.alarms.topic,
        )
        self.dashboard = WorkerDashboard(
            self, "Workers", namespace=config.metrics_namespace, queues=config.worker.queues
        )
