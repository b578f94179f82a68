"""Import time of the Lambda entry points in a fresh process (their cold start).

    .venv/bin/python bench/import_time.py [--runs N] [bin/lambda/worker_monitor.py ...]

Without paths, every ``bin/lambda/*.py``. Each import runs in a new
interpreter, N times; the table shows the median time of the import itself
(measured inside the child) and of the whole process (interpreter start
included), and whether Celery or kombu got imported. Baselines in the same
run show where the time goes: an empty interpreter, ``import boto3``,
``import redis``, Powertools' Logger, and the three together.

For worker_monitor a last line adds what its first invocation sets up on top
of the import (settings from the environment, the Redis client, boto3
CloudWatch and ECS clients), with a dummy environment: nothing is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = REPO / "bin" / "lambda"
HEAVY = ("celery", "kombu", "pydantic", "aws_cdk")
GOAL_SECONDS = 0.5

PROBE = """
import json, sys, time
start = time.perf_counter()
{body}
took = time.perf_counter() - start
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps({{"seconds": took, "heavy": heavy}}))
"""

BASELINES = {
    "python -c pass": "pass",
    "import boto3": "import boto3",
    "import redis": "import redis",
    "powertools Logger": "from aws_lambda_powertools import Logger",
    "boto3 + redis + Logger": "import boto3, redis\nfrom aws_lambda_powertools import Logger",
}

FIRST_INVOCATION = """
import worker_monitor
from beatless.aws import client
worker_monitor._prepared()
client("cloudwatch"); client("ecs")
"""
DUMMY_ENV = {
    "BROKER_URL": "redis://127.0.0.1:6379/0",
    "QUEUES": "graph,ingest,default",
    "ECS_CLUSTER": "beatless",
    "ECS_SERVICE": "workers",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}


def measure(body: str, runs: int, extra_env: dict[str, str] | None = None) -> tuple[float, float, list[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(LAMBDAS)]),
        **(extra_env or {}),
    }
    inside, wall, heavy = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PROBE.format(body=body, heavy=HEAVY)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        wall.append(time.perf_counter() - start)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        inside.append(result["seconds"])
        heavy = result["heavy"]
    return statistics.median(inside), statistics.median(wall), heavy


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", type=Path, help="entry files (default: bin/lambda/*.py)")
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per row (median reported)")
    args = parser.parse_args()
    paths = args.paths or sorted(LAMBDAS.glob("*.py"))

    rows: list[tuple[str, float, float, str]] = []
    for label, body in BASELINES.items():
        inside, wall, _ = measure(body, args.runs)
        rows.append((f"baseline: {label}", inside, wall, ""))
    over_goal = []
    for path in paths:
        inside, wall, heavy = measure(f"import {path.stem}", args.runs)
        verdict = "celery/kombu: " + (", ".join(heavy) if heavy else "none")
        verdict += f"; goal <= {GOAL_SECONDS} s: " + ("met" if inside <= GOAL_SECONDS else "MISSED")
        if heavy or inside > GOAL_SECONDS:
            over_goal.append(path.stem)
        rows.append((path.stem, inside, wall, verdict))
        if path.stem == "worker_monitor":
            inside, wall, _ = measure(FIRST_INVOCATION, args.runs, DUMMY_ENV)
            rows.append(
                (
                    "worker_monitor + first-invocation set-up",
                    inside,
                    wall,
                    "settings, Redis + 2 boto3 clients",
                )
            )

    print(f"median of {args.runs} fresh processes; {sys.executable} (Python {sys.version.split()[0]})")
    print(
        f"load average {os.getloadavg()[0]:.2f}; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE')}"
    )
    print()
    header = f"{'import':<46}{'import itself':>14}{'whole process':>15}  notes"
    print(header)
    print("-" * (len(header) + 40))
    for label, inside, wall, note in rows:
        print(f"{label:<46}{inside * 1000:>11.0f} ms{wall * 1000:>12.0f} ms  {note}")
    return 1 if over_goal else 0


if __name__ == "__main__":
    raise SystemExit(main())
