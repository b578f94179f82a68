"""CDK entry point (cdk.json: `.venv/bin/python -m infra.app`).

Trigger: `npx cdk synth|diff|deploy`, or `python -m infra.app` from the
repository root (writes cdk.out/). Run as a module: `infra` is imported from
the current directory and `beatless` from the virtualenv (installed editable),
so nothing edits `sys.path`.
The only code that reads CDK context and the environment: context keys are
listed in infra/config.py (e.g. `-c workerImage=<uri> -c vpcId=vpc-... -c
alarmEmail=ops@example.com -c maxWorkerTasks=20`); the account and region come
from context `account`/`region`, else from the CLI's CDK_DEFAULT_ACCOUNT/REGION
(your credentials), else a placeholder whose AZs are committed in
cdk.context.json so synth needs no credentials. cdk-nag (AwsSolutions) runs on
every synth and fails it on any unacknowledged finding.
Side effects: bundles the Lambda code (uv, no Docker) and stages the worker
image context into the output directory; idempotent (unchanged assets are reused).
"""

from __future__ import annotations

import os

# jsii reads this when aws_cdk is imported: Node 20 works but prints a banner.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

if not __package__:  # `python infra/app.py` would not find the `infra` package
    raise SystemExit("run the CDK app from the repository root as a module: python -m infra.app")

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import REPO_ROOT, Config, committed_context
from infra.stacks import build


def main() -> None:
    run_by_cli = "CDK_OUTDIR" in os.environ  # the CLI passes cdk.json/cdk.context.json itself
    app = cdk.App(
        context=None if run_by_cli else committed_context(REPO_ROOT),
        outdir=None if run_by_cli else str(REPO_ROOT / "cdk.out"),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    config = Config.from_context(
        app.node.try_get_context,
        default_account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
        default_region=os.environ.get("CDK_DEFAULT_REGION"),
    )
    build(app, config)
    app.synth()


if __name__ == "__main__":
    main()
