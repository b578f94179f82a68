"""The worker service: the environment the worker reads, its secret, stop
timeout, health check, logs, image and protection permissions — and that the
real worker and monitor settings accept what the templates give them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beatless.jobs import job
from beatless.monitor.settings import MonitorSettings
from beatless.queues.connection import BrokerSettings
from beatless.workers.settings import FARGATE_MAX_STOP_TIMEOUT_SECONDS, WorkerSettings
from infra.config import WORKER_STOP_TIMEOUT_SECONDS
from tests.infra.test_worker_operations import OPERATIONS_ENVIRONMENT

pytestmark = pytest.mark.slow

WORKER_ENVIRONMENT = {
    "BROKER_URL",
    "WORKER_QUEUES",
    "BROKER_TRANSPORT_OPTIONS",
    "WORKER_CONCURRENCY",
    "WORKER_STOP_TIMEOUT_SECONDS",
    "METRICS_NAMESPACE",
    # The heavy operations' (test_worker_operations.py checks where they point).
    *OPERATIONS_ENVIRONMENT,
}


def _container(synth: Any) -> dict[str, Any]:
    containers = synth.only("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def _monitor_environment(synth: Any) -> dict[str, Any]:
    function = synth.stacks.jobs.jobs["worker_monitor"].function
    return synth.properties(function)["Environment"]["Variables"]  # type: ignore[no-any-return]


def test_worker_gets_exactly_its_environment_and_the_password_only_as_an_ecs_secret(synth: Any) -> None:
    container = _container(synth)
    env = synth.container_environment()
    assert set(env) == WORKER_ENVIRONMENT
    assert env["WORKER_QUEUES"] == "graph,ingest,default"
    assert env["METRICS_NAMESPACE"] == synth.config.metrics_namespace
    assert env["WORKER_CONCURRENCY"] == str(synth.config.worker.concurrency)
    url = synth.render(env["BROKER_URL"])
    assert url == f"rediss://broker.internal:{synth.config.broker.port}/0"
    # The endpoint is the replication group's primary endpoint (exported by the broker stack).
    group = synth.logical_id(synth.stacks.broker.broker.replication_group)
    assert f"{group}PrimaryEndPointAddress" in json.dumps(env["BROKER_URL"])

    secret_id = synth.logical_id(synth.stacks.broker.broker.auth_token)
    (secret,) = container["Secrets"]
    assert secret["Name"] == "BROKER_PASSWORD"
    assert secret_id in json.dumps(secret["ValueFrom"])


def test_stop_timeout_is_within_fargates_limit_and_is_what_the_worker_is_told(synth: Any) -> None:
    container = _container(synth)
    assert container["StopTimeout"] <= FARGATE_MAX_STOP_TIMEOUT_SECONDS
    assert container["StopTimeout"] == WORKER_STOP_TIMEOUT_SECONDS
    assert synth.container_environment()["WORKER_STOP_TIMEOUT_SECONDS"] == str(container["StopTimeout"])


def test_the_real_worker_accepts_the_deployed_environment(synth: Any) -> None:
    """WorkerSettings + the Celery app's own start-up checks (time limits < visibility timeout)."""
    from worker.app import create_app, task_time_limits

    env = {name: synth.render(value) for name, value in synth.container_environment().items()}
    env["BROKER_PASSWORD"] = "stand-in-for-the-secret"
    settings = WorkerSettings.from_env(env)
    assert settings.queues == synth.config.worker.queues
    assert settings.stop_timeout_seconds == _container(synth)["StopTimeout"]
    settings.check_task_limits(task_time_limits(create_app(settings)))
    limits = task_time_limits(create_app(settings))
    assert settings.visibility_timeout_seconds > max(v for v in limits.values() if v)


def test_monitor_and_worker_read_the_same_queues_and_key_layout(synth: Any) -> None:
    monitor_env = _monitor_environment(synth)
    worker_env = synth.container_environment()
    assert monitor_env["BROKER_TRANSPORT_OPTIONS"] == worker_env["BROKER_TRANSPORT_OPTIONS"]
    assert monitor_env["QUEUES"] == worker_env["WORKER_QUEUES"] == "graph,ingest,default"
    assert monitor_env["BROKER_URL"] == worker_env["BROKER_URL"]
    assert json.loads(worker_env["BROKER_TRANSPORT_OPTIONS"])["visibility_timeout"] > 0


def test_the_real_monitor_accepts_the_deployed_environment(synth: Any) -> None:
    raw = _monitor_environment(synth)
    env = {name: synth.render(value) for name, value in raw.items()}
    settings = MonitorSettings.from_env(env)
    broker = BrokerSettings.from_env(env)  # the monitor reads the broker through Need.BROKER's settings
    registry = job("worker_monitor")
    assert broker.queues == synth.config.worker.queues
    assert settings.namespace == synth.config.metrics_namespace
    assert settings.samples == int(registry.environment["SAMPLES"])
    assert settings.sample_interval_seconds == float(registry.environment["SAMPLE_INTERVAL_SECONDS"])
    assert settings.ecs_configured
    assert broker.url == f"rediss://broker.internal:{synth.config.broker.port}/0"
    secret_id = synth.logical_id(synth.stacks.broker.broker.auth_token)
    assert secret_id in json.dumps(raw["BROKER_PASSWORD_SECRET_ARN"])
    cluster_id = synth.logical_id(synth.stacks.worker.workers.cluster)
    service_id = synth.logical_id(synth.stacks.worker.workers.service)
    assert cluster_id in json.dumps(raw["ECS_CLUSTER"])
    assert service_id in json.dumps(raw["ECS_SERVICE"]) and "Name" in json.dumps(raw["ECS_SERVICE"])


def test_health_check_and_logs(synth: Any) -> None:
    container = _container(synth)
    assert container["HealthCheck"]["Command"] == ["CMD", "python", "-m", "worker.healthcheck"]
    logging = container["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    group = synth.template(synth.stacks.worker)["Resources"][logging["Options"]["awslogs-group"]["Ref"]]
    assert group["Properties"]["RetentionInDays"] == synth.config.log_retention_days


def test_task_protection_is_allowed_only_on_this_clusters_tasks(synth: Any) -> None:
    cluster_id = synth.logical_id(synth.stacks.worker.workers.cluster)
    task_definition = synth.only("AWS::ECS::TaskDefinition")
    task_role = task_definition["TaskRoleArn"]["Fn::GetAtt"][0]
    policies = [
        p
        for p in synth.resources("AWS::IAM::Policy", synth.stacks.worker).values()
        if {"Ref": task_role} in p["Roles"]
    ]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    protection = [s for s in statements if "ecs:UpdateTaskProtection" in s["Action"]]
    assert len(protection) == 1
    (statement,) = protection
    assert sorted(statement["Action"]) == ["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"]
    arn = statement["Resource"]
    expected = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":ecs:{synth.config.region}:{synth.config.account}:task/",
                {"Ref": cluster_id},
                "/*",
            ],
        ]
    }
    assert arn == expected
    # The rest of the task role is the operations' (tests/infra/test_worker_operations.py).


def test_cluster_has_container_insights_and_the_service_leaves_desired_count_to_scaling(synth: Any) -> None:
    cluster = synth.only("AWS::ECS::Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]
    service = synth.only("AWS::ECS::Service")
    assert "DesiredCount" not in service  # a deploy must never reset what autoscaling chose
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    # The broker's client group, the database's and the graph nodes' (the operations call their API).
    broker_clients = synth.logical_id(synth.stacks.broker.broker.client_security_group)
    database_clients = synth.logical_id(synth.stacks.data.database.access.client_security_group)
    graph_clients = synth.logical_id(synth.stacks.graph.client_security_group)
    groups = [json.dumps(group) for group in network["SecurityGroups"]]
    assert len(groups) == 3
    assert broker_clients in groups[0] and database_clients in groups[1] and graph_clients in groups[2]


def test_default_image_is_built_from_the_worker_dockerfile_and_staged_without_venv(synth: Any) -> None:
    manifest = json.loads((synth.outdir / f"{synth.stacks.worker.stack_name}.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "worker/Dockerfile"
    staged = synth.outdir / image["source"]["directory"]
    assert (staged / "worker" / "Dockerfile").is_file()
    for unwanted in (".venv", "node_modules", ".git", "cdk.out"):
        assert not (staged / unwanted).exists(), f"{unwanted} was copied into the image context"
    assert not list(staged.rglob("__pycache__"))


def test_image_given_by_uri_is_used_and_pullable(synth_variant: Any) -> None:
    uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/beatless-worker:1.2.3"
    container = synth_variant.only("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
    assert synth_variant.render(container["Image"]) == uri
    manifest_path = synth_variant.outdir / f"{synth_variant.stacks.worker.stack_name}.assets.json"
    assert not json.loads(manifest_path.read_text()).get("dockerImages")
    statements = [
        s
        for p in synth_variant.resources("AWS::IAM::Policy", synth_variant.stacks.worker).values()
        for s in p["PolicyDocument"]["Statement"]
    ]
    pulls = [s for s in statements if "ecr:BatchGetImage" in s["Action"]]
    assert pulls and "repository/beatless-worker" in json.dumps(pulls)
    assert synth_variant.container_environment()["WORKER_CONCURRENCY"] == "4"


def test_worker_files_are_where_the_task_definition_expects_them() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "worker" / "Dockerfile").is_file()
    assert (root / "worker" / "healthcheck.py").is_file()
