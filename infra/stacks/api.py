"""The API stack: the task API (HTTP API + Lambda, IAM authorization) from the jobs' code asset.

It points down to what it reaches (broker, data, graph stacks: names, ARNs, groups, the
graph stack's estimates policy) and to the monitoring stack's alarm topic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from beatless.jobs import API_FUNCTIONS, DEPLOY_FUNCTIONS, JOBS
from infra.components.console_test_events import ConsoleTestEvents
from infra.components.database import CA_BUNDLE_IN_ASSET
from infra.components.lambda_bundle import lambda_code
from infra.components.task_api import HANDLER, TaskApi, TaskApiAccess
from infra.config import ApiConfig, LambdaSource

assert HANDLER in API_FUNCTIONS


class ApiStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: ApiConfig,
        source: LambdaSource,
        events_dir: Path,
        access: TaskApiAccess,
        alarm_topic: sns.ITopic,
        log_retention: logs.RetentionDays,
        database_ca_bundle: Path | None = None,
        **kwargs: Any,
    ):
        super().__init__(scope, id, **kwargs)
        extra = {CA_BUNDLE_IN_ASSET: database_ca_bundle} if database_ca_bundle else {}
        self.task_api = TaskApi(
            self,
            "TaskApi",
            code=lambda_code(source, [HANDLER], extra),
            access=access,
            alarm_topic=alarm_topic,
            log_retention=log_retention,
            throttle_rate=config.throttle_rate,
            throttle_burst=config.throttle_burst,
        )
        # Into the registry the jobs stack creates or references (the app deploys this stack after it).
        self.test_events = ConsoleTestEvents(
            self,
            "TestEvents",
            functions={HANDLER: self.task_api.function},
            events_dir=events_dir,
            create_registry=False,
            known=[job.name for job in JOBS] + list(DEPLOY_FUNCTIONS),
        )
        CfnOutput(self, "TaskApiUrl", value=self.task_api.url, description="The task API (SigV4, IAM)")
