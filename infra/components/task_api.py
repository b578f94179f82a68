"""The task API in AWS: API Gateway HTTP API -> one Lambda (`bin/lambda/task_api.py`).

* Every route (`ANY /{proxy+}`, the application routes itself) is behind IAM
  authorization: callers sign with SigV4 and need `execute-api:Invoke` on it;
  there is no unauthenticated route, not even the OpenAPI document.
* The default stage logs every request as JSON to a log group of its own and
  throttles (rate and burst from the config).
* The function runs in the VPC, in the groups Redis and PostgreSQL accept, reads
  their secrets, reads graph sizes from the graph registry (GetItem) and, through
  the graph stack's managed policy, sizes uploads and reads staged manifests (cost
  estimates). Its environment is what `beatless.api.environment` reads.
* Alarms to the topic: the function's errors and throttles, the API's 5xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from beatless.jobs import FUNCTION_LIMITS
from infra.components.alarms import count_alarm
from infra.components.database import DatabaseAccess
from infra.components.graph_registry import GraphRegistryAccess
from infra.components.job_grants import BrokerAccess, Grant, MonitorAccess, wake_monitor
from infra.components.lambda_role import lambda_execution_role

HANDLER = "task_api"
TIMEOUT_SECONDS = FUNCTION_LIMITS[HANDLER].timeout_seconds
MEMORY_MB = FUNCTION_LIMITS[HANDLER].memory_mb
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "user": "$context.identity.userArn",
    "requestTime": "$context.requestTime",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "latency": "$context.responseLatency",
    "integrationError": "$context.integrationErrorMessage",
}


@dataclass(frozen=True)
class TaskApiAccess:
    """What the task API reaches (composed by the app from the other stacks)."""

    broker: BrokerAccess
    database: DatabaseAccess
    graph_registry: GraphRegistryAccess
    uploads_bucket_name: str
    staging_bucket_name: str
    estimates_policy: iam.IManagedPolicy
    monitor: MonitorAccess | None = None  # the worker monitor, woken when a task is sent


def api_grant(access: TaskApiAccess) -> Grant:
    """The function's statements, environment and network."""
    grant = Grant(statements=[], environment={})
    broker, database, registry = access.broker, access.database, access.graph_registry
    grant.place(broker.vpc, broker.subnets, broker.security_group)
    grant.read_secret(broker.auth_secret)
    grant.environment.update(broker.environment)
    grant.environment["BROKER_PASSWORD_SECRET_ARN"] = broker.auth_secret.secret_arn
    grant.place(database.vpc, database.subnets, database.client_security_group)
    grant.read_secret(database.secret)
    grant.environment.update(database.environment)
    grant.statements.append(
        iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=[registry.graph_table_arn])
    )
    grant.environment.update(registry.environment)
    grant.environment["UPLOADS_BUCKET"] = access.uploads_bucket_name
    grant.environment["STAGING_BUCKET"] = access.staging_bucket_name
    grant.managed_policies.append(access.estimates_policy)
    if access.monitor is not None:
        wake_monitor(access.monitor, grant)
    return grant


class TaskApi(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code: lambda_.Code,
        access: TaskApiAccess,
        alarm_topic: sns.ITopic,
        log_retention: logs.RetentionDays,
        throttle_rate: float,
        throttle_burst: int,
    ):
        super().__init__(scope, id)
        grant = api_grant(access)
        self.grant = grant
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention)
        self.role = lambda_execution_role(
            self,
            "Role",
            description="Runs the task API Lambda",
            policy_name="TaskApi",
            log_group=self.log_group,
            statements=grant.statements,
            in_vpc=True,
            wildcard_reasons=grant.wildcard_reasons,
        )
        for policy in grant.managed_policies:
            self.role.add_managed_policy(policy)
        self.function = lambda_.Function(
            self,
            "Function",
            description="Beatless task API: launch, follow, revoke and retry heavy tasks",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler=f"{HANDLER}.handler",
            code=code,
            timeout=Duration.seconds(TIMEOUT_SECONDS),
            memory_size=MEMORY_MB,
            environment=grant.environment,
            role=self.role,
            log_group=self.log_group,
            vpc=grant.vpc,
            vpc_subnets=grant.subnets,
            security_groups=grant.security_groups,
        )
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention)
        self.http_api = apigw.HttpApi(
            self,
            "HttpApi",
            description="Beatless task API (IAM authorization)",
            default_authorizer=authorizers.HttpIamAuthorizer(),
            create_default_stage=False,
        )
        self.http_api.add_routes(
            path="/{proxy+}",
            methods=[apigw.HttpMethod.ANY],
            integration=integrations.HttpLambdaIntegration(
                "Handler", self.function, payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0
            ),
        )
        self.stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.http_api,
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=throttle_rate, burst_limit=throttle_burst),
        )
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        # (HTTP API stages write access logs through API Gateway's service-linked role.)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn,
            format=json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":")),
        )
        self.alarms = self._alarms(alarm_topic)
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-L1",
                reason=(
                    "Pinned to python3.12: the bundle's binary wheels are resolved for CPython 3.12 "
                    "(infra/components/lambda_bundle.py) and the code is tested against it."
                ),
            )
        )

    @property
    def url(self) -> str:
        return self.http_api.api_endpoint

    def _alarms(self, topic: sns.ITopic) -> list[cloudwatch.Alarm]:
        minute = Duration.minutes(1)
        specs = [
            ("ErrorsAlarm", "task API Lambda raised (Errors >= 1 in a minute)", self.function.metric_errors(
                statistic="Sum", period=minute)),
            ("ThrottlesAlarm", "task API Lambda throttled (Throttles >= 1 in a minute)",
             self.function.metric_throttles(statistic="Sum", period=minute)),
            ("ServerErrorsAlarm", "task API answered 5xx (>= 1 in a minute)",
             self.http_api.metric_server_error(statistic="Sum", period=minute)),
        ]  # fmt: skip
        return [count_alarm(self, id, description, metric, topic) for id, description, metric in specs]
