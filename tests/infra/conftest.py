"""The CDK app, synthesized ONCE per test session (with cdk-nag), and helpers
to read the CloudFormation templates it produced.

Synth needs neither Docker nor AWS credentials: the Lambda bundle is built by
uv on this machine and the worker image context is only staged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from cdk_nag import AwsSolutionsChecks

from beatless.jobs import DAY, MINUTE, Job, Need, RetryPolicy, Schedule
from infra.config import Config, LambdaSource, committed_context
from infra.stacks import BeatlessStacks, build

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_HOST = "broker.internal"  # stands in for the replication group's primary endpoint

# The variant app's existing database, bucket and CA bundle (context values).
EXISTING_DATABASE_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:beatless/db-AbC123"
EXISTING_DATABASE_GROUP = "sg-0123456789abcdef0"
EXISTING_BUCKET = "acme-beatless-customer-data"
CA_BUNDLE_TEXT = "-----BEGIN CERTIFICATE-----\nstand-in for the RDS CA bundle\n-----END CERTIFICATE-----\n"
VARIANT_MONTHLY = {"monthlyAllocationDay": "5", "monthlyAllocationHour": "7"}
# An x86 node type (the image follows the architecture) and a bigger group.
VARIANT_GRAPH = {
    "graphInstanceType": "r7i.large",
    "graphMinNodes": "2",
    "graphMaxNodes": "6",
    "graphDataVolumeGiB": "500",
    "graphNodeCapacity": "80",
    "graphScaleOutBelowSlots": "12",
    "graphBackupRetentionDays": "45",
}


def _scaffold_job(name: str, schedule: str, period: int, needs: set[Need]) -> Job:
    return Job(
        name=name,
        summary=f"Infra test scaffolding ({name}): exercises a construct path no registry job uses yet.",
        core="tests.infra.conftest",  # never run: only the bundle reads the stub entry point
        schedule=Schedule(schedule),
        period_seconds=period,
        timeout_seconds=60,
        memory_mb=256,
        needs=frozenset(needs),
        retry=RetryPolicy(scheduler_attempts=2, max_event_age_seconds=30 * MINUTE, lambda_async_retries=2),
        idempotency="Test scaffolding; never deployed.",
    )


# Jobs the variant app adds to the registry, so every kind of need and both kinds
# of missed-run alarm are synthesized whatever the registry holds today: a
# monthly PostgreSQL job (watchdog), a weekly storage reader (watchdog), a daily
# one (a direct alarm over 36 hourly periods).
SCAFFOLD_JOBS: tuple[Job, ...] = (
    _scaffold_job("scaffold_monthly_db", "cron(0 4 2 * ? *)", 31 * DAY, {Need.DATABASE, Need.METRICS}),
    _scaffold_job("scaffold_weekly_storage", "cron(0 6 ? * MON *)", 7 * DAY, {Need.STORAGE_READ}),
    _scaffold_job("scaffold_daily_db", "cron(0 2 * * ? *)", DAY, {Need.DATABASE}),
)


@dataclass
class Synthesized:
    config: Config
    stacks: BeatlessStacks
    outdir: Path
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # by stack name

    @property
    def validation_report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads((self.outdir / "validation-report.json").read_text())
        return report

    def template(self, stack: cdk.Stack) -> dict[str, Any]:
        return self.templates[stack.stack_name]

    def resources(self, type_: str, stack: cdk.Stack | None = None) -> dict[str, dict[str, Any]]:
        """Logical id -> Properties of every resource of `type_` (in one stack or all)."""
        chosen = [self.template(stack)] if stack is not None else list(self.templates.values())
        return {
            logical_id: resource.get("Properties", {})
            for template in chosen
            for logical_id, resource in template.get("Resources", {}).items()
            if resource["Type"] == type_
        }

    def only(self, type_: str, stack: cdk.Stack | None = None) -> dict[str, Any]:
        found = self.resources(type_, stack)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.values()))

    def logical_id(self, construct: Any) -> str:
        """The logical id of an L1 or of an L2's default child."""
        element = construct if isinstance(construct, cdk.CfnElement) else construct.node.default_child
        return cdk.Stack.of(element).resolve(element.logical_id)  # type: ignore[no-any-return]

    def properties(self, construct: Any) -> dict[str, Any]:
        """The synthesized Properties of an L1, or of an L2's default child."""
        stack = cdk.Stack.of(construct)
        return self.templates[stack.stack_name]["Resources"][self.logical_id(construct)]["Properties"]  # type: ignore[no-any-return]

    def render(self, value: Any) -> str:
        """`render` with this app's stand-ins: broker endpoint, URL suffix, partition."""
        return render(
            value,
            {
                "PrimaryEndPointPort": str(self.config.broker.port),
                "PrimaryEndPointAddress": BROKER_HOST,
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::Partition": "aws",
            },
        )

    def warnings(self, stack: cdk.Stack) -> list[str]:
        """The synth warnings (Annotations) attached to `stack`'s constructs."""
        manifest = json.loads((self.outdir / "manifest.json").read_text())
        artifact = manifest["artifacts"][stack.artifact_id]
        metadata = artifact.get("metadata", {})
        if "additionalMetadataFile" in artifact:
            metadata = json.loads((self.outdir / artifact["additionalMetadataFile"]).read_text())
        return [
            str(entry["data"])
            for entries in metadata.values()
            for entry in entries
            if entry["type"] == "aws:cdk:warning"
        ]

    def container_environment(self) -> dict[str, Any]:
        container = self.only("AWS::ECS::TaskDefinition")["ContainerDefinitions"][0]
        return {item["Name"]: item["Value"] for item in container["Environment"]}


def render(value: Any, fill: Mapping[str, str] | None = None) -> str:
    """A CloudFormation value as text, references replaced by stand-ins.

    Lets the real settings parsers of the worker and the monitor read the
    environment the templates would give them. `fill` maps a substring of an
    export/attribute name to the stand-in value (e.g. the endpoint port).
    """
    fill = fill or {}
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(render(part, fill) for part in parts)
        name = json.dumps(argument, sort_keys=True)
        for key, stand_in in fill.items():
            if key in name:
                return stand_in
        return f"ref-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
    raise AssertionError(f"cannot render {value!r}")


def scaffold_source(root: Path, jobs: Sequence[Job]) -> LambdaSource:
    """bin/lambda plus a stub entry point per scaffolding job (only the bundle reads them)."""
    handlers = root / "bin" / "lambda"
    shutil.copytree(REPO_ROOT / "bin" / "lambda", handlers, ignore=shutil.ignore_patterns("__pycache__"))
    for job in jobs:
        stub = (
            '"""Infra test scaffolding."""\n\n\n'
            f'def handler(event, context):\n    return {{"job": "{job.name}"}}\n'
        )
        (handlers / f"{job.name}.py").write_text(stub)
    return LambdaSource(repo_root=REPO_ROOT, handlers_dir=handlers)


def synthesize(
    outdir: Path,
    extra_context: Mapping[str, Any] | None = None,
    extra_jobs: Sequence[Job] = (),
) -> Synthesized:
    context = committed_context(REPO_ROOT)
    context.update(extra_context or {})
    app = cdk.App(context=context, outdir=str(outdir))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    config = Config.from_context(app.node.try_get_context)
    if extra_jobs:
        config = dataclasses.replace(
            config,
            jobs=(*config.jobs, *extra_jobs),
            lambda_source=scaffold_source(outdir.parent / f"{outdir.name}.src", extra_jobs),
        )
    stacks = build(app, config)
    assembly = app.synth()  # raises on any unacknowledged cdk-nag finding
    synthesized = Synthesized(config=config, stacks=stacks, outdir=outdir)
    for stack in stacks.all():
        synthesized.templates[stack.stack_name] = assembly.get_stack_by_name(stack.stack_name).template
    return synthesized


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """The app exactly as `npx cdk synth` builds it from the committed context."""
    yield synthesize(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def synth_variant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """The app with every context option set: existing VPC, database and bucket,
    image by URI, e-mail, sizes, an RDS CA bundle, the graph plane's sizes (x86
    nodes), the registry's monthly time moved, and the scaffolding jobs added to
    the registry."""
    ca_bundle = tmp_path_factory.mktemp("ca") / "rds-ca.pem"
    # Its content is not parsed at synth: the tests check it reaches the bundle and the environment.
    ca_bundle.write_text(CA_BUNDLE_TEXT)
    yield synthesize(
        tmp_path_factory.mktemp("cdk.out.variant"),
        {
            "vpcId": "vpc-0abc1234def567890",
            "workerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/beatless-worker:1.2.3",
            "alarmEmail": "ops@example.com",
            "maxWorkerTasks": "25",
            "scaleInIdleSeconds": "600",
            "workerConcurrency": "4",
            "databaseSecretArn": EXISTING_DATABASE_SECRET,
            "databaseSecurityGroupId": EXISTING_DATABASE_GROUP,
            "databaseCaBundle": str(ca_bundle),
            "storageBucketName": EXISTING_BUCKET,
            "testEventRegistry": "existing",
            **VARIANT_GRAPH,
            **VARIANT_MONTHLY,
        },
        extra_jobs=SCAFFOLD_JOBS,
    )
