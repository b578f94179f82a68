"""CDK entry point (cdk.json: `.venv/bin/python infra/app.py`).

Trigger: `npx cdk synth|diff|deploy`, or `python infra/app.py` (writes cdk.out/).
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
import sys
from pathlib import Path

# jsii reads this when aws_cdk is imported: Node 20 works but prints a banner.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts infra/ first on sys.path, where infra/constructs
# would shadow the `constructs` library; import everything from the root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT / "infra"]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "src")]

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.config import Config, committed_context  # noqa: E402
from infra.stacks import build  # noqa: E402


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
