"""The graph stack: registries, buckets, the API key, the node group (security
group, launch template, user data, role, lifecycle hook), its scale-out on
`AvailableSlots`, the dashboard, and the kuzu_instance_monitor wired to it.

The alarm is checked against what the monitor's own code publishes: its
`maintain` runs here with stand-in clients, with the settings the deployed
Lambda environment gives it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from beatless.events import SCHEDULER_INPUT
from beatless.graphs import monitor
from beatless.graphs.node.settings import NodeSettings
from beatless.graphs.registry import GRAPH_INSTANCE_INDEX, Instance, InstanceStatus
from beatless.jobs import job
from infra.components.graph_node_software import node_source_files
from infra.components.graph_node_user_data import ENV_FILE, INSTANCE_ID_VARIABLE, PRIVATE_IP_VARIABLE
from infra.components.graph_nodes import HOOK_NAME
from tests.infra.conftest import VARIANT_GRAPH

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITOR = "kuzu_instance_monitor"


@pytest.fixture(params=["synth", "synth_variant"])
def app(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def _graph(synth: Any) -> dict[str, Any]:
    return synth.template(synth.stacks.graph)["Resources"]  # type: ignore[no-any-return]


def _id(value: dict[str, Any]) -> str:
    if "Ref" in value:
        return str(value["Ref"])
    if "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    return json.dumps(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(synth: Any) -> list[dict[str, Any]]:
    role = synth.properties(synth.stacks.graph.nodes.role)
    assert "ManagedPolicyArns" not in role, "the node role carries only its own inline statements"
    return [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]


def _user_data(synth: Any) -> str:
    template = synth.properties(synth.stacks.graph.nodes.launch_template)["LaunchTemplateData"]
    return synth.render(template["UserData"]["Fn::Base64"])


def _node_environment(user_data: str) -> dict[str, str]:
    """The KEY=VALUE lines the script writes to the node's environment file, with
    the shell variables it fills from IMDS replaced by sample values."""
    match = re.search(rf"cat > {re.escape(ENV_FILE)} <<EOF\n(.*?)\nEOF\n", user_data, re.DOTALL)
    assert match, "the user data writes no node environment"
    text = match.group(1).replace(INSTANCE_ID_VARIABLE, "i-0123456789abcdef0")
    text = text.replace(PRIVATE_IP_VARIABLE, "10.0.3.17")
    return dict(line.split("=", 1) for line in text.splitlines())


# -- registries -------------------------------------------------------------------------------


def test_registry_tables_keys_index_billing_recovery_encryption_and_retention(app: Any) -> None:
    registry = app.stacks.graph.registry
    resources = _graph(app)
    for table, key in ((registry.instances, "instance_id"), (registry.graphs, "graph_id")):
        resource = resources[app.logical_id(table)]
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
        properties = resource["Properties"]
        assert properties["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
        assert properties["BillingMode"] == "PAY_PER_REQUEST"
        assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert properties["SSESpecification"]["SSEEnabled"] is True
        assert properties["DeletionProtectionEnabled"] is True
    instances = app.properties(registry.instances)
    assert "GlobalSecondaryIndexes" not in instances
    graphs = app.properties(registry.graphs)
    (index,) = graphs["GlobalSecondaryIndexes"]
    assert index["IndexName"] == GRAPH_INSTANCE_INDEX == "instance_id-index"
    assert index["KeySchema"] == [{"AttributeName": "instance_id", "KeyType": "HASH"}]
    assert index["Projection"] == {"ProjectionType": "ALL"}  # the monitor reads whole graphs by node
    assert {"AttributeName": "instance_id", "AttributeType": "S"} in graphs["AttributeDefinitions"]
    assert {"AttributeName": "graph_id", "AttributeType": "S"} in graphs["AttributeDefinitions"]


# -- buckets ----------------------------------------------------------------------------------


def _bucket_policy(synth: Any, bucket: Any) -> list[dict[str, Any]]:
    bucket_id = synth.logical_id(bucket)
    policies = [
        p["Properties"]
        for p in _graph(synth).values()
        if p["Type"] == "AWS::S3::BucketPolicy" and p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    (policy,) = policies
    return policy["PolicyDocument"]["Statement"]  # type: ignore[no-any-return]


def test_buckets_are_encrypted_private_tls_only_logged_and_kept(app: Any) -> None:
    buckets = app.stacks.graph.buckets
    resources = _graph(app)
    logs_id = app.logical_id(buckets.access_logs)
    for name, bucket in {**buckets.buckets, "access_logs": buckets.access_logs}.items():
        resource = resources[app.logical_id(bucket)]
        assert resource["DeletionPolicy"] == "Retain", name
        properties = resource["Properties"]
        (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256", name
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        denies = [
            s
            for s in _bucket_policy(app, bucket)
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert denies, f"{name} must refuse non-TLS requests"
        if name != "access_logs":
            assert properties["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}, name
            assert properties["LoggingConfiguration"]["LogFilePrefix"] == f"{name}/"


def test_buckets_lifecycle_and_versioning(app: Any) -> None:
    config = app.config.graph
    buckets = app.stacks.graph.buckets

    def rules(bucket: Any) -> list[dict[str, Any]]:
        found = app.properties(bucket)["LifecycleConfiguration"]["Rules"]
        for rule in found:
            assert rule["Status"] == "Enabled"
            assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
        return found  # type: ignore[no-any-return]

    (uploads,) = rules(buckets.uploads)
    assert uploads["ExpirationInDays"] == config.upload_expiration_days
    (staging,) = rules(buckets.staging)
    assert staging["ExpirationInDays"] == config.staging_expiration_days == 7
    (backups,) = rules(buckets.backups)
    assert "ExpirationInDays" not in backups  # the current backup stays
    assert backups["NoncurrentVersionExpiration"] == {"NoncurrentDays": config.backup_retention_days}
    assert app.properties(buckets.backups)["VersioningConfiguration"] == {"Status": "Enabled"}
    for bucket in (buckets.uploads, buckets.staging):
        assert "VersioningConfiguration" not in app.properties(bucket)


# -- the API key -----------------------------------------------------------------------------


def test_api_key_is_generated_raw_and_long(app: Any) -> None:
    secret = app.properties(app.stacks.graph.api_key.secret)
    assert "SecretString" not in secret  # generated by Secrets Manager at deploy time
    generate = secret["GenerateSecretString"]
    assert generate["PasswordLength"] == 48
    assert generate["ExcludePunctuation"] is True
    # No JSON template: the SecretString is the key itself, as the nodes and the monitor read it.
    assert "SecretStringTemplate" not in generate and "GenerateStringKey" not in generate


# -- network ----------------------------------------------------------------------------------


def test_node_security_group_accepts_only_the_graph_clients_on_the_node_port(app: Any) -> None:
    graph = app.stacks.graph
    node_group = app.logical_id(graph.nodes.security_group)
    clients = app.logical_id(graph.client_security_group)
    node_sg = app.properties(graph.nodes.security_group)
    assert "SecurityGroupIngress" not in node_sg  # no inline (CIDR) ingress
    ingress = [
        r["Properties"]
        for template in app.templates.values()
        for r in template.get("Resources", {}).values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress" and _id(r["Properties"]["GroupId"]) == node_group
    ]
    assert len(ingress) == 1
    (rule,) = ingress
    port = app.config.graph.node_port
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", port, port)
    assert _id(rule["SourceSecurityGroupId"]) == clients
    assert "CidrIp" not in rule and "CidrIpv6" not in rule
    # The port the nodes listen on (their environment) is the port opened.
    env = _node_environment(_user_data(app))
    assert int(env["GRAPH_NODE_PORT"]) == port
    assert env["GRAPH_NODE_HOST"] == "0.0.0.0"


def test_the_worker_tasks_and_the_monitor_are_the_graph_clients(app: Any) -> None:
    clients = app.logical_id(app.stacks.graph.client_security_group)
    service = app.properties(app.stacks.worker.workers.service)
    groups = service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    assert any(clients in json.dumps(g) for g in groups)
    function = app.properties(app.stacks.jobs.jobs[MONITOR].function)
    assert [clients in json.dumps(g) for g in function["VpcConfig"]["SecurityGroupIds"]] == [True]


def test_the_graph_stack_refers_only_to_the_network(app: Any) -> None:
    """Worker and jobs refer to the graph stack, never the other way round (no cycles)."""
    text = json.dumps(app.template(app.stacks.graph))
    imports = set(re.findall(r'"Fn::ImportValue": "([A-Za-z]+):', text))
    assert imports <= {app.stacks.network.stack_name}
    dependencies = {stack.stack_name for stack in app.stacks.graph.dependencies}
    assert dependencies <= {app.stacks.network.stack_name}
    assert app.stacks.graph.stack_name in {s.stack_name for s in app.stacks.jobs.dependencies}


# -- the node group ---------------------------------------------------------------------------


def test_launch_template_imdsv2_monitoring_encrypted_volumes_and_the_types_architecture(app: Any) -> None:
    config = app.config.graph
    data = app.properties(app.stacks.graph.nodes.launch_template)["LaunchTemplateData"]
    assert data["InstanceType"] == config.instance_type
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["Monitoring"] == {"Enabled": True}
    assert "NetworkInterfaces" not in data  # no public address
    volumes = {m["DeviceName"]: m["Ebs"] for m in data["BlockDeviceMappings"]}
    assert set(volumes) == {"/dev/xvda", "/dev/xvdb"}
    for ebs in volumes.values():
        assert ebs["Encrypted"] is True and ebs["VolumeType"] == "gp3"
    assert volumes["/dev/xvdb"]["VolumeSize"] == config.data_volume_gib
    # Amazon Linux 2023 for the instance type's architecture (Graviton r7g, or x86 r7i in the variant).
    image = data["ImageId"]["Ref"]
    parameter = app.template(app.stacks.graph)["Parameters"][image]
    expected = "arm64" if config.instance_type.split(".")[0].endswith("g") else "x86_64"
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"  # resolved at deploy
    assert re.fullmatch(
        rf"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-[\w.]+-{expected}", parameter["Default"]
    )


def test_group_in_private_subnets_with_the_configured_size_and_no_replacing_updates(app: Any) -> None:
    config = app.config.graph
    resource = _graph(app)[app.logical_id(app.stacks.graph.nodes.group)]
    group = resource["Properties"]
    assert group["AutoScalingGroupName"] == app.stacks.graph.nodes.asg_name
    assert (group["MinSize"], group["MaxSize"]) == (str(config.min_nodes), str(config.max_nodes))
    assert "DesiredCapacity" not in group  # a deploy never resets what scaling chose
    assert _id(group["LaunchTemplate"]["LaunchTemplateId"]) == app.logical_id(
        app.stacks.graph.nodes.launch_template
    )
    assert group["MetricsCollection"] == [{"Granularity": "1Minute"}]
    network = app.stacks.network.network
    private = network.vpc.select_subnets(subnet_type=network.private_subnets.subnet_type).subnet_ids
    assert len(group["VPCZoneIdentifier"]) == len(private)
    if app.stacks.network.network.vpc.node.default_child is not None:  # a new VPC: its private subnets
        for subnet in group["VPCZoneIdentifier"]:
            assert "privateSubnet" in json.dumps(subnet)
    # Nodes hold their databases on their own volume: never replaced by a deploy.
    assert "AutoScalingRollingUpdate" not in resource.get("UpdatePolicy", {})
    assert "AutoScalingReplacingUpdate" not in resource.get("UpdatePolicy", {})


def test_termination_lifecycle_hook_is_completed_by_the_node(app: Any) -> None:
    hook = app.properties(app.stacks.graph.nodes.termination_hook)
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["HeartbeatTimeout"] == 300
    assert hook["DefaultResult"] == "CONTINUE"
    assert hook["LifecycleHookName"] == HOOK_NAME
    assert _id(hook["AutoScalingGroupName"]) == app.logical_id(app.stacks.graph.nodes.group)
    user_data = _user_data(app)
    assert f"--lifecycle-hook-name {HOOK_NAME}" in user_data
    assert "autoscaling/target-lifecycle-state" in user_data
    assert "--lifecycle-action-result CONTINUE" in user_data


def test_user_data_starts_the_node_with_its_full_environment_and_no_secret(app: Any) -> None:
    graph = app.stacks.graph
    user_data = _user_data(app)
    env = _node_environment(user_data)
    # The node's own settings parser accepts what the instance gets.
    settings = NodeSettings.from_env(env)
    assert settings.endpoint == f"http://10.0.3.17:{app.config.graph.node_port}"
    assert settings.instance_id == "i-0123456789abcdef0"
    assert settings.capacity == app.config.graph.node_capacity
    assert settings.asg_name == graph.nodes.asg_name
    assert settings.registered and settings.api_key is None
    assert settings.data_dir.is_absolute()
    for name, construct in (
        ("GRAPH_API_KEY_SECRET_ARN", graph.api_key.secret),
        ("INSTANCE_REGISTRY_TABLE", graph.registry.instances),
        ("GRAPH_REGISTRY_TABLE", graph.registry.graphs),
    ):
        assert env[name] == app.render({"Ref": app.logical_id(construct)}), name
    assert env["AWS_REGION"] == app.config.region
    # The ARN only: no dynamic reference, no value, no key variable.
    assert "resolve:secretsmanager" not in user_data and "SecretString" not in user_data
    assert "GRAPH_API_KEY=" not in user_data and "get-secret-value" not in user_data
    assert "ExecStart=/opt/beatless/venv/bin/beatless graph-node" in user_data
    assert "systemctl enable --now beatless-graph-node.service" in user_data
    assert "python3.12" in user_data and '[graph]"' in user_data
    # IMDSv2 only: every metadata read carries a session token.
    for call in re.findall(r"curl [^\n]*169\.254\.169\.254[^\n]*", user_data):
        assert "X-aws-ec2-metadata-token" in call or "api/token" in call, call


def test_the_node_software_asset_is_what_the_user_data_installs(app: Any) -> None:
    user_data = _user_data(app)
    url = re.search(r'aws s3 cp --region \S+ "(s3://[^"]+)"', user_data)
    assert url
    manifest = json.loads((app.outdir / f"{app.stacks.graph.stack_name}.assets.json").read_text())
    (asset,) = [a for a in manifest["files"].values() if a["source"]["path"].startswith("asset.")]
    (destination,) = asset["destinations"].values()
    key = destination["objectKey"]
    assert url.group(1).endswith(f"/{key}")
    staged = app.outdir / asset["source"]["path"]
    names = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}
    assert {"pyproject.toml", "README.md", "requirements.lock"} <= names
    assert {"src/beatless/cli.py", "src/beatless/graphs/node/server.py"} <= names
    assert not {n for n in names if "__pycache__" in n or n.endswith(".pyc")}
    assert names == {str(p) for p in node_source_files(REPO_ROOT)} | {"README.md"}  # the readme: a stub
    # The role may read exactly this object of the assets bucket.
    reads = [s for s in _role_statements(app) if "cdk-hnb659fds-assets" in json.dumps(s["Resource"])]
    assert [app.render(s["Resource"]) for s in reads] == [
        f"arn:aws:s3:::{url.group(1).removeprefix('s3://')}"
    ]


def test_node_role_is_limited_to_its_tables_buckets_secret_asset_and_group(app: Any) -> None:
    graph = app.stacks.graph
    statements = _role_statements(app)
    tables = {app.logical_id(graph.registry.instances), app.logical_id(graph.registry.graphs)}
    buckets = {name: app.logical_id(bucket) for name, bucket in graph.buckets.buckets.items()}
    secret = app.logical_id(graph.api_key.secret)
    wildcards = []
    for statement in statements:
        actions = _list(statement["Action"])
        resources = _list(statement["Resource"])
        services = {a.split(":")[0] for a in actions}
        assert statement["Effect"] == "Allow"
        if resources == ["*"]:
            wildcards.extend(actions)
            continue
        text = json.dumps(resources)
        if services == {"dynamodb"}:
            assert all(any(t in json.dumps(r) for t in tables) for r in resources), resources
            assert "*" not in text
        elif services == {"s3"}:
            for resource in resources:
                rendered = json.dumps(resource)
                assert any(b in rendered for b in buckets.values()) or "cdk-hnb659fds-assets" in rendered
            if "s3:PutObject" in actions:  # backups (archives) and staging (exports for subgraphs)
                writable = [
                    {"Fn::Join": ["", [{"Fn::GetAtt": [buckets[b], "Arn"]}, "/*"]]}
                    for b in ("staging", "backups")
                ]
                assert len(resources) == 1 and resources[0] in writable, resources
            if (
                "s3:GetObject" in actions
                and "s3:PutObject" not in actions
                and "cdk-hnb659fds-assets" not in text
            ):
                assert buckets["uploads"] in text  # uploads are only ever read
        elif services == {"secretsmanager"}:
            assert actions == ["secretsmanager:GetSecretValue"] and resources == [{"Ref": secret}]
        elif services == {"autoscaling"}:
            assert app.render(resources[0]).endswith(f":autoScalingGroupName/{graph.nodes.asg_name}")
        else:
            raise AssertionError(f"unexpected statement {statement}")
    # Only Session Manager / Run Command take "*"; nothing of data, secrets or the group does.
    assert wildcards and {a.split(":")[0] for a in wildcards} <= {"ssm", "ssmmessages", "ec2messages"}
    granted = {a for s in statements for a in _list(s["Action"])}
    assert {"dynamodb:PutItem", "dynamodb:Query", "s3:GetObject", "s3:PutObject"} <= granted
    assert {"autoscaling:SetInstanceProtection", "autoscaling:CompleteLifecycleAction"} <= granted
    assert not {a for a in granted if a.endswith("*")}
    assert "cloudwatch:PutMetricData" not in granted


# -- scale-out ------------------------------------------------------------------------------


class _RecordingCloudWatch:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


class _OneRegistry:
    """The registries as `collect_metrics` reads them: the instances."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances_ = instances

    def all_instances(self) -> list[Instance]:
        return list(self.instances_)


def _published_by_the_monitor(synth: Any) -> list[tuple[str, str, tuple[str, ...]]]:
    """(namespace, metric, dimension names) of each datum a `collect_metrics` run
    publishes, with the settings the deployed Lambda's environment gives it."""
    variables = synth.properties(synth.stacks.jobs.jobs[MONITOR].function)["Environment"]["Variables"]
    settings = monitor.MonitorSettings.from_env({k: synth.render(v) for k, v in variables.items()})
    instances = [
        Instance("i-1", "http://10.0.0.1:8700", InstanceStatus.HEALTHY, capacity=50, database_count=48),
        Instance("i-2", "http://10.0.0.2:8700", InstanceStatus.UNHEALTHY, capacity=50, database_count=3),
    ]
    cloudwatch = _RecordingCloudWatch()
    clients = monitor.Clients(
        _OneRegistry(instances),  # type: ignore[arg-type]
        ec2=None,
        cloudwatch=cloudwatch,
        health=lambda instance: None,
    )
    report = monitor.maintain(
        clients, settings, monitor.Action.COLLECT_METRICS, now=datetime.now(UTC), dry_run=False
    )
    assert report.metrics[monitor.AVAILABLE_SLOTS] == 2.0  # healthy nodes only
    return [
        (call["Namespace"], datum["MetricName"], tuple(d["Name"] for d in datum.get("Dimensions", [])))
        for call in cloudwatch.calls
        for datum in call["MetricData"]
    ]


def test_scale_out_alarm_reads_exactly_what_the_monitor_publishes(app: Any) -> None:
    alarm = app.properties(app.stacks.graph.scaling.alarm)
    reads = (alarm["Namespace"], alarm["MetricName"], tuple(d["Name"] for d in alarm.get("Dimensions", [])))
    published = _published_by_the_monitor(app)
    assert reads in published
    assert reads == (monitor.DEFAULT_NAMESPACE, monitor.AVAILABLE_SLOTS, ())
    # And the monitor may publish there: its PutMetricData condition names that namespace.
    role = app.template(app.stacks.jobs)["Resources"][
        _id(app.properties(app.stacks.jobs.jobs[MONITOR].function)["Role"])
    ]["Properties"]
    (put,) = [
        s
        for p in role["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if s["Action"] == "cloudwatch:PutMetricData"
    ]
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": [alarm["Namespace"]]}}


def test_scale_out_alarm_adds_one_node_below_the_threshold(app: Any) -> None:
    config = app.config.graph
    alarm = app.properties(app.stacks.graph.scaling.alarm)
    assert alarm["Statistic"] == "Minimum" and alarm["Period"] == 300
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Threshold"] == config.scale_out_below_slots
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"  # a blind monitor never grows the group
    policy_id = app.logical_id(app.stacks.graph.scaling.scale_out)
    assert alarm["AlarmActions"] == [{"Ref": policy_id}]
    policy = _graph(app)[policy_id]["Properties"]
    assert policy["PolicyType"] == "StepScaling"
    assert policy["AdjustmentType"] == "ChangeInCapacity"
    assert policy["StepAdjustments"] == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 1}]
    assert _id(policy["AutoScalingGroupName"]) == app.logical_id(app.stacks.graph.nodes.group)
    assert policy["EstimatedInstanceWarmup"] >= 300  # boot, install, register, one reading


def test_dashboard_shows_capacity_instances_orphans_and_errors(app: Any) -> None:
    body = app.render(app.properties(app.stacks.graph.dashboard.dashboard)["DashboardBody"])
    dashboard = json.loads(body)
    shown = json.dumps(dashboard)
    for name in (
        monitor.AVAILABLE_SLOTS,
        monitor.USED_SLOTS,
        monitor.TOTAL_CAPACITY,
        monitor.HEALTHY_INSTANCES,
        monitor.UNHEALTHY_INSTANCES,
        monitor.INSTANCES_PAST_GRACE,
        monitor.GRAPHS_REMOVED,
        monitor.MONITOR_ERRORS,
        monitor.INSTANCE_UTILIZATION,
    ):
        assert f'"{name}"' in shown or f'\\"{name}\\"' in shown, name
    assert app.config.graph.metrics_namespace in shown
    assert app.stacks.graph.nodes.asg_name in shown


def test_the_variants_graph_context_reaches_the_stack(synth_variant: Any) -> None:
    config = synth_variant.config.graph
    assert (config.instance_type, config.min_nodes, config.max_nodes) == ("r7i.large", 2, 6)
    assert config.data_volume_gib == int(VARIANT_GRAPH["graphDataVolumeGiB"])
    assert config.backup_retention_days == int(VARIANT_GRAPH["graphBackupRetentionDays"])
    env = _node_environment(_user_data(synth_variant))
    assert env["GRAPH_NODE_CAPACITY"] == VARIANT_GRAPH["graphNodeCapacity"]
    alarm = synth_variant.properties(synth_variant.stacks.graph.scaling.alarm)
    assert alarm["Threshold"] == int(VARIANT_GRAPH["graphScaleOutBelowSlots"])


# -- the monitor ------------------------------------------------------------------------------


def test_monitor_has_its_three_schedules_each_with_its_action(app: Any) -> None:
    built = app.stacks.jobs.jobs[MONITOR]
    registry = job(MONITOR)
    assert len(built.schedules) == 3
    actions = {}
    for schedule, declared in zip(built.schedules, registry.schedules, strict=True):
        properties = app.properties(schedule)
        assert properties["ScheduleExpression"] == declared.expression
        event = json.loads(properties["Target"]["Input"])
        assert {k: event[k] for k in json.loads(SCHEDULER_INPUT)} == json.loads(SCHEDULER_INPUT)
        actions[declared.expression] = event["action"]
        monitor.parse_action("action", event["action"])  # the handler accepts it
    assert actions == {
        "rate(5 minutes)": "collect_metrics",
        "rate(1 hour)": "health_check",
        "cron(40 4 * * ? *)": "cleanup_graphs",
    }
    # Three schedules, one missed-run alarm on the most frequent period (any run's success counts).
    assert app.properties(built.missed_run_alarm)["Period"] <= 2 * registry.period_seconds
    assert MONITOR not in app.stacks.jobs.watched


def test_monitor_runs_on_every_ec2_state_change(app: Any) -> None:
    built = app.stacks.jobs.jobs[MONITOR]
    (rule,) = built.rules
    properties = app.properties(rule)
    assert properties["EventPattern"] == {
        "source": ["aws.ec2"],
        "detail-type": [monitor.EC2_STATE_CHANGE],
    }
    (target,) = properties["Targets"]
    assert _id(target["Arn"]) == app.logical_id(built.function)
    # The handler turns such an event into a health check of that instance.
    event = {
        "source": "aws.ec2",
        "detail-type": monitor.EC2_STATE_CHANGE,
        "time": "2026-06-15T12:00:00Z",
        "detail": {"instance-id": "i-0123456789abcdef0", "state": "terminated"},
    }
    assert monitor.translate_event(event)["action"] == "health_check"


def test_monitor_lambda_reaches_the_graph_plane(app: Any) -> None:
    graph = app.stacks.graph
    function = app.properties(app.stacks.jobs.jobs[MONITOR].function)
    env = function["Environment"]["Variables"]
    assert (
        env["GRAPH_ASG_NAME"]
        == graph.nodes.asg_name
        == _graph(app)[app.logical_id(graph.nodes.group)]["Properties"]["AutoScalingGroupName"]
    )
    assert env["METRICS_NAMESPACE"] == monitor.DEFAULT_NAMESPACE
    for name, construct in (
        ("GRAPH_API_KEY_SECRET_ARN", graph.api_key.secret),
        ("INSTANCE_REGISTRY_TABLE", graph.registry.instances),
        ("GRAPH_REGISTRY_TABLE", graph.registry.graphs),
    ):
        assert app.logical_id(construct) in json.dumps(env[name]), name
    for key, value in job(MONITOR).environment.items():
        assert env[key] == value
    settings = monitor.MonitorSettings.from_env({k: app.render(v) for k, v in env.items()})
    assert settings.asg_name == graph.nodes.asg_name
    assert function["VpcConfig"]["SubnetIds"]
