"""Import time of the Lambda entry points in a fresh process (their cold start).

    .venv/bin/python bench/import_time.py [--runs N] [bin/lambda/worker_monitor.py ...]

Without paths, every ``bin/lambda/*.py``. Each import runs in a new
interpreter, N times; the table shows the median time of the import itself
(measured inside the child) and of the whole process (interpreter start
included), and whether a heavy module (Celery, kombu, pydantic, CDK, DuckDB,
a graph engine) got imported. Baselines in the same run show where the time
goes: an empty interpreter, ``import boto3``, ``import redis``, Powertools'
Logger, and the three together.

For worker_monitor and credit_reservation_cleanup (every database job loads
the same) a further line adds what the first invocation sets up on top of the
import (settings from the environment; the Redis client and boto3 clients, or
psycopg), with a dummy environment: nothing is contacted.
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
HEAVY = ("celery", "kombu", "billiard", "pydantic", "aws_cdk", "duckdb", "ladybug", "kuzu")
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

# What a first invocation sets up on top of the import, by entry point (nothing is contacted):
# (the set-up, what the table says it is).
FIRST_INVOCATIONS = {
    "worker_monitor": (
        """
import os
import worker_monitor
from beatless.jobs.resources import environment_resources
from beatless.monitor.settings import MonitorSettings
MonitorSettings.from_env(os.environ)
resources = environment_resources(os.environ)
resources.broker()
resources.cloudwatch(read_timeout=3, attempts=2)
resources.ecs(read_timeout=3, attempts=2)
""",
        "settings, Redis + 2 boto3 clients",
    ),
    "credit_reservation_cleanup": (
        """
import os
import credit_reservation_cleanup
from beatless.jobs.resources import environment_resources
environment_resources(os.environ).database(credit_reservation_cleanup.handler.job).settings
""",
        "settings, psycopg (a database job's connection code)",
    ),
}
DUMMY_ENV = {
    "BROKER_URL": "redis://127.0.0.1:6379/0",
    "QUEUES": "graph,ingest,default",
    "ECS_CLUSTER": "beatless",
    "ECS_SERVICE": "workers",
    "DATABASE_URL": "postgresql://bench@127.0.0.1:5432/beatless",
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
        verdict = "heavy modules: " + (", ".join(heavy) if heavy else "none")
        verdict += f"; goal <= {GOAL_SECONDS} s: " + ("met" if inside <= GOAL_SECONDS else "MISSED")
        if heavy or inside > GOAL_SECONDS:
            over_goal.append(path.stem)
        rows.append((path.stem, inside, wall, verdict))
        if path.stem in FIRST_INVOCATIONS:
            body, what = FIRST_INVOCATIONS[path.stem]
            inside, wall, _ = measure(body, args.runs, DUMMY_ENV)
            rows.append((f"{path.stem} + first-invocation set-up", inside, wall, what))

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
