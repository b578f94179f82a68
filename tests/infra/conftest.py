"""The CDK app, synthesized ONCE per test session (with cdk-nag), and helpers
to read the CloudFormation templates it produced.

Synth needs neither Docker nor AWS credentials: the Lambda bundle is built by
uv on this machine and the worker image context is only staged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from cdk_nag import AwsSolutionsChecks

from infra.config import Config, committed_context
from infra.stacks import BeatlessStacks, build

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_HOST = "broker.internal"  # stands in for the replication group's primary endpoint


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


def synthesize(outdir: Path, extra_context: Mapping[str, Any] | None = None) -> Synthesized:
    context = committed_context(REPO_ROOT)
    context.update(extra_context or {})
    app = cdk.App(context=context, outdir=str(outdir))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    config = Config.from_context(app.node.try_get_context)
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
    """The app with every context option set: existing VPC, image by URI, e-mail, sizes."""
    yield synthesize(
        tmp_path_factory.mktemp("cdk.out.variant"),
        {
            "vpcId": "vpc-0abc1234def567890",
            "workerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/beatless-worker:1.2.3",
            "alarmEmail": "ops@example.com",
            "maxWorkerTasks": "25",
            "scaleInIdleSeconds": "600",
            "workerConcurrency": "4",
        },
    )
