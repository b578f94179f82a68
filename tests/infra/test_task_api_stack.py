"""The task API in AWS (the API stack): an HTTP API whose every route needs IAM
authorization, integrated with the task_api Lambda (payload 2.0) from the one code asset;
JSON access logs and throttling on its stage; the function in the VPC with the environment
`beatless.api.environment` reads (no secret values), exactly its grants, and alarms on its
errors, throttles and the API's 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest

from beatless.api.environment import task_api
from tests.infra.conftest import EXISTING_DATABASE_SECRET
from tests.infra.test_worker_operations import _exported, _spelled

pytestmark = pytest.mark.slow

API_ENVIRONMENT = {
    "BROKER_URL",
    "BROKER_PASSWORD_SECRET_ARN",
    "QUEUES",
    "BROKER_TRANSPORT_OPTIONS",
    "DATABASE_SECRET_ARN",
    "DATABASE_SSLMODE",
    "INSTANCE_REGISTRY_TABLE",
    "GRAPH_REGISTRY_TABLE",
    "UPLOADS_BUCKET",
    "STAGING_BUCKET",
    "MONITOR_FUNCTION_NAME",
}


@pytest.fixture(params=["synth", "synth_variant"])
def app(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def _function(app: Any) -> dict[str, Any]:
    found = [f for f in app.resources("AWS::Lambda::Function", app.stacks.api).values()
             if f.get("Handler") == "task_api.handler"]  # fmt: skip
    assert len(found) == 1
    return found[0]


def test_every_route_needs_iam_and_reaches_the_task_api_lambda(app: Any) -> None:
    api = app.stacks.api
    (http_api,) = app.resources("AWS::ApiGatewayV2::Api", api).values()
    assert http_api["ProtocolType"] == "HTTP"
    routes = app.resources("AWS::ApiGatewayV2::Route", api).values()
    assert routes and all(r["AuthorizationType"] == "AWS_IAM" for r in routes)
    assert {r["RouteKey"] for r in routes} == {"ANY /{proxy+}"}
    (integration,) = app.resources("AWS::ApiGatewayV2::Integration", api).values()
    assert integration["IntegrationType"] == "AWS_PROXY" and integration["PayloadFormatVersion"] == "2.0"
    function = api.task_api.function
    assert json.dumps(_spelled(function, function.function_arn)) in json.dumps(integration["IntegrationUri"])
    assert _function(app)["Runtime"] == "python3.12"
    # The jobs' code asset: one bundle for every Beatless function.
    codes = {json.dumps(f["Code"], sort_keys=True) for f in app.resources("AWS::Lambda::Function").values()
             if f.get("Runtime") == "python3.12"}  # fmt: skip
    assert len(codes) == 1


def test_the_stage_logs_json_and_throttles(app: Any) -> None:
    (stage,) = app.resources("AWS::ApiGatewayV2::Stage", app.stacks.api).values()
    assert stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == app.config.api.throttle_rate
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == app.config.api.throttle_burst
    fields = json.loads(stage["AccessLogSettings"]["Format"])
    assert {"requestId", "status", "user", "latency", "integrationError"} <= set(fields)
    logs = app.stacks.api.task_api.access_logs
    assert stage["AccessLogSettings"]["DestinationArn"] == _spelled(logs, logs.log_group_arn)


def test_the_function_gets_what_the_api_reads_and_no_secret_value(app: Any) -> None:
    function = _function(app)
    env = function["Environment"]["Variables"]
    assert set(env) >= API_ENVIRONMENT
    assert not {"GRAPH_API_KEY", "BROKER_PASSWORD", "DATABASE_URL", "BACKUP_BUCKET"} & set(env)
    assert "resolve:secretsmanager" not in json.dumps(env)
    broker = app.stacks.broker.broker
    assert _exported(app, env["BROKER_PASSWORD_SECRET_ARN"]) == _spelled(
        broker.auth_token, broker.auth_token.secret_arn
    )
    graphs = app.stacks.graph.registry.graphs
    assert _exported(app, env["GRAPH_REGISTRY_TABLE"]) == _spelled(graphs, graphs.table_name)
    assert function["VpcConfig"]["SecurityGroupIds"] and function["VpcConfig"]["SubnetIds"]
    # The real reader accepts it (nothing connects before a request).
    rendered = {name: app.render(value) for name, value in env.items()}
    rendered["DATABASE_SECRET_ARN"] = EXISTING_DATABASE_SECRET  # a rendered reference is no ARN
    rendered["BROKER_PASSWORD_SECRET_ARN"] = EXISTING_DATABASE_SECRET.replace("db", "broker")
    built = task_api(rendered)
    assert built.transport.priority_steps


def test_the_role_holds_exactly_the_api_grants(app: Any) -> None:
    api = app.stacks.api
    role = api.task_api.role
    properties = app.properties(role)
    assert len(properties["ManagedPolicyArns"]) == 1  # the graph stack's estimates policy
    statements = properties["Policies"][0]["PolicyDocument"]["Statement"]
    actions = sorted(
        a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    )
    assert "dynamodb:GetItem" in actions and actions.count("secretsmanager:GetSecretValue") == 2
    assert not [
        a for a in actions if a.startswith(("s3:", "dynamodb:Put", "dynamodb:Update", "dynamodb:Delete"))
    ]
    policy = app.stacks.graph.api_estimates_policy
    document = app.properties(policy)["PolicyDocument"]["Statement"]
    assert [s["Action"] for s in document] == ["s3:GetObject"]


def test_the_producers_may_invoke_the_worker_monitor_and_nothing_else(app: Any) -> None:
    """The task API and ingestion_queue_processor wake an idle monitor (`beatless.queues.wake`):
    each may invoke that one function, named in its environment; the monitor samples once
    when idle."""
    monitor = app.stacks.jobs.jobs["worker_monitor"]
    name = _spelled(monitor.function, monitor.function.function_name)
    producers = [(app.stacks.api, app.stacks.api.task_api.function, app.stacks.api.task_api.role)]
    ingestion = app.stacks.jobs.jobs["ingestion_queue_processor"]
    producers.append((app.stacks.jobs, ingestion.function, ingestion.function.role))
    for stack, function, role in producers:
        env = app.properties(function)["Environment"]["Variables"]
        spelled = env["MONITOR_FUNCTION_NAME"]
        assert (spelled if stack is app.stacks.jobs else _exported(app, spelled)) == name
        statements = [
            s for p in app.properties(role).get("Policies", []) for s in p["PolicyDocument"]["Statement"]
        ] or [
            s
            for policy in app.resources("AWS::IAM::Policy", stack).values()
            if any(r.get("Ref") == app.logical_id(role) for r in policy["Roles"])
            for s in policy["PolicyDocument"]["Statement"]
        ]
        invokes = [s for s in statements if "lambda:InvokeFunction" in json.dumps(s["Action"])]
        assert len(invokes) == 1, statements
        arn = _spelled(monitor.function, monitor.function.function_arn)
        resource = invokes[0]["Resource"]
        assert (resource if stack is app.stacks.jobs else _exported(app, resource)) == arn
    monitor_env = app.properties(monitor.function)["Environment"]["Variables"]
    assert monitor_env["IDLE_SAMPLES"] == "1" and monitor_env["SAMPLES"] == "6"
    others = [j for n, j in app.stacks.jobs.jobs.items() if n not in ("ingestion_queue_processor",)]
    for job in others:
        assert "MONITOR_FUNCTION_NAME" not in app.properties(job.function)["Environment"]["Variables"]


def test_alarms_watch_errors_throttles_and_server_errors(app: Any) -> None:
    alarms = app.resources("AWS::CloudWatch::Alarm", app.stacks.api).values()
    assert sorted(a["MetricName"] for a in alarms) == ["5xx", "Errors", "Throttles"]
    assert all(a["AlarmActions"] for a in alarms)


def test_the_cost_report_counts_the_alarm_metrics_the_stacks_deploy(synth: Any) -> None:
    """`beatless cost` prices alarms per metric (high resolution under 60 s): its counts are the
    synthesized template's."""
    from beatless.cost.report import Assumptions, build

    high, standard = 0, 0
    alarms = [
        a for stack in synth.stacks.all() for a in synth.resources("AWS::CloudWatch::Alarm", stack).values()
    ]
    for alarm in alarms:
        if "Metrics" in alarm:
            stats = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
            periods = [s["Period"] for s in stats]
        else:
            periods = [alarm["Period"]]
        high += sum(1 for p in periods if p < 60)
        standard += sum(1 for p in periods if p >= 60)
    report = build(synth.config.jobs, Assumptions(queues=len(synth.config.worker.queues)))
    lines = {line.item: line.quantity for line in report.lines}
    assert lines["scaling signal: scale-out alarm (high resolution)"] == high
    assert (
        lines["scaling signal: scale-in and heartbeat alarms"]
        + lines["job, task API, graph and worker alarms"]
        == standard
    )
