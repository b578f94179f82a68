"""The VPC, the Redis broker, the alarm topic and the workers' dashboard (in the worker stack)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from beatless import metrics

pytestmark = pytest.mark.slow


def test_new_vpc_spans_two_azs_with_one_nat_and_flow_logs(synth: Any) -> None:
    network = synth.stacks.network
    assert len(synth.resources("AWS::EC2::VPC", network)) == 1
    subnets = synth.resources("AWS::EC2::Subnet", network).values()
    assert {s["AvailabilityZone"] for s in subnets} == {"us-east-1a", "us-east-1b"}  # from cdk.context.json
    assert len(synth.resources("AWS::EC2::NatGateway", network)) == 1
    flow_log = synth.only("AWS::EC2::FlowLog", network)
    assert flow_log["TrafficType"] == "ALL"
    assert flow_log["LogDestinationType"] == "cloud-watch-logs"
    (group,) = [g for g in synth.resources("AWS::Logs::LogGroup", network).values() if "RetentionInDays" in g]
    assert group["RetentionInDays"] == synth.config.log_retention_days


def test_existing_vpc_from_context_creates_no_network(synth_variant: Any) -> None:
    assert synth_variant.resources("AWS::EC2::VPC") == {}
    assert synth_variant.resources("AWS::EC2::NatGateway") == {}
    # The broker still lands in that VPC's private subnets.
    subnet_group = synth_variant.only("AWS::ElastiCache::SubnetGroup")
    assert subnet_group["SubnetIds"]
    manifest = json.loads((synth_variant.outdir / "manifest.json").read_text())
    lookups = [m for m in manifest.get("missing", []) if m["provider"] == "vpc-provider"]
    assert [m["props"]["filter"]["vpc-id"] for m in lookups] == ["vpc-0abc1234def567890"]


def test_broker_is_encrypted_multi_az_on_a_non_default_port_and_never_evicts(synth: Any) -> None:
    broker = synth.stacks.broker
    group = synth.properties(broker.broker.replication_group)
    assert group["Engine"] == "redis"
    assert group["TransitEncryptionEnabled"] is True
    assert group["TransitEncryptionMode"] == "required"
    assert group["AtRestEncryptionEnabled"] is True
    assert group["MultiAZEnabled"] is True
    assert group["AutomaticFailoverEnabled"] is True
    assert group["NumCacheClusters"] >= 2
    assert group["Port"] == synth.config.broker.port != 6379
    parameters = synth.only("AWS::ElastiCache::ParameterGroup", broker)
    assert parameters["Properties"] == {"maxmemory-policy": "noeviction"}
    assert group["CacheParameterGroupName"] == {"Ref": synth.logical_id(broker.broker.parameter_group)}


def test_only_broker_clients_reach_redis_and_only_on_its_port(synth: Any) -> None:
    broker = synth.stacks.broker.broker
    redis_group = synth.properties(broker.security_group)
    assert redis_group["SecurityGroupEgress"][0]["CidrIp"] == "255.255.255.255/32"  # CDK's "no egress" marker
    assert "SecurityGroupIngress" not in redis_group
    (ingress,) = synth.resources("AWS::EC2::SecurityGroupIngress", synth.stacks.broker).values()
    port = synth.config.broker.port
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", port, port)
    client_id = synth.logical_id(broker.client_security_group)
    assert ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": [client_id, "GroupId"]}


def test_alarm_topic_is_encrypted_and_tls_only_with_optional_email(synth: Any, synth_variant: Any) -> None:
    topic = synth.properties(synth.stacks.monitoring.alarms.topic)
    assert "KmsMasterKeyId" in topic
    policies = synth.resources("AWS::SNS::TopicPolicy", synth.stacks.monitoring).values()
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )
    key = synth.only("AWS::KMS::Key", synth.stacks.monitoring)
    assert key["EnableKeyRotation"] is True
    assert any(
        s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in key["KeyPolicy"]["Statement"]
    ), "CloudWatch alarms must be allowed to use the topic's key"
    assert synth.resources("AWS::SNS::Subscription") == {}
    subscription = synth_variant.only("AWS::SNS::Subscription")
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", "ops@example.com")


def test_dashboard_shows_depth_tasks_protection_and_monitor_health(synth: Any) -> None:
    dashboard = synth.properties(synth.stacks.worker.dashboard.dashboard)
    body = json.loads(synth.render(dashboard["DashboardBody"]))
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles == [
        "Pending tasks per queue",
        "Reserved tasks per queue",
        "Backlog per running task",
        "Scaling alarms now (ALARM: its step policy is being invoked)",
        "Scale out: pending tasks (all queues) vs threshold",
        "Scale in: pending + reserved tasks (all queues) vs threshold",
        "Desired vs running tasks",
        "Task protection failures",
        "Monitor heartbeat / errors per minute",
    ]
    # The scaling widgets: tests/infra/test_scaling_alarms.py
    by_title = {w["properties"]["title"]: w["properties"].get("metrics") for w in body["widgets"]}
    namespace = synth.config.metrics_namespace
    for title, name in (
        ("Pending tasks per queue", metrics.PENDING_TASKS),
        ("Reserved tasks per queue", metrics.RESERVED_TASKS),
        ("Backlog per running task", metrics.BACKLOG_PER_TASK),
    ):
        queues = [m[3] for m in by_title[title] if m[:3] == [namespace, name, metrics.QUEUE_DIMENSION]]
        assert queues == list(synth.config.worker.queues)
    tasks = json.dumps(by_title["Desired vs running tasks"])
    for name in (metrics.RUNNING_TASKS, metrics.DESIRED_TASKS):
        assert f'"{name}"' in tasks
    search = f'{{{namespace},{metrics.TASK_ID_DIMENSION}}} MetricName=\\"{metrics.TASK_PROTECTED}\\"'
    assert f"SUM(SEARCH('{search}'" in tasks
    failures = json.dumps(by_title["Task protection failures"])
    assert metrics.PROTECTION_FAILURES in failures and metrics.REASON_DIMENSION in failures
    health = json.dumps(by_title["Monitor heartbeat / errors per minute"])
    assert metrics.MONITOR_HEARTBEAT in health and metrics.MONITOR_ERRORS in health
