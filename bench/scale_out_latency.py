"""Worst-case time from a first pending task to a scale-out decision, read from
the synthesized CloudFormation templates, next to the naive approach.

    .venv/bin/python bench/scale_out_latency.py                # synth (cold + warm) + pytest timing
    .venv/bin/python bench/scale_out_latency.py --cdk-out cdk.out --no-pytest

Beatless: the monitor samples every SAMPLE_INTERVAL_SECONDS (the worker_monitor
Lambda's environment in the template); the scale-out alarm needs
DatapointsToAlarm breaching periods of its Period (the alarm in the template).
A task enqueued just after a reading is seen one interval later, and the
period holding that reading closes at most one period after it, so the worst
case is interval + period x datapoints.

When the service is idle the monitor takes IDLE_SAMPLES readings a run (one, deployed) and
the producers that send tasks wake it (`beatless.queues.wake`, an asynchronous Lambda
invoke): the worst case is then the wake (WAKE_SECONDS, an assumed bound for an
asynchronous invoke and a cold start, not measured here) + period x datapoints. A task that
reaches Redis another way (no wake) waits for the next scheduled run: the schedule's minute
+ period x datapoints. Both are printed.

Naive / peer: target tracking on standard-resolution metrics, the way AWS's
Copilot worker service and most Celery-on-ECS setups scale: a publisher
every 60 s plus target tracking's high alarm of 3 datapoints x 60 s
(anchors_autoscaling.md section 7); and it never leaves 0 tasks for a single
message (copilot-cli#3376), which Beatless' >= 1 threshold does.

Also measured: `npx cdk synth` wall time with an empty output directory
("cold": Lambda bundle built, image context staged; uv and jsii caches warm)
and again into the same directory ("warm": unchanged assets reused), and the
infra pytest suite's wall time. Goal: worst case <= 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT / "src")]

from beatless import metrics  # noqa: E402

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"
GOAL_SECONDS = 30
NAIVE_PUBLISH_SECONDS = 60
NAIVE_ALARM_PERIOD_SECONDS = 60
NAIVE_ALARM_DATAPOINTS = 3
WAKE_SECONDS = 3  # asynchronous invoke queued and a cold start (assumed, see the docstring)
SCHEDULE_SECONDS = 60  # rate(1 minute)


def templates(outdir: Path) -> dict[str, dict[str, Any]]:
    manifest = json.loads((outdir / "manifest.json").read_text())
    found = {}
    for name, artifact in manifest["artifacts"].items():
        if artifact["type"] == "aws:cloudformation:stack":
            template_file = artifact["properties"]["templateFile"]
            found[name] = json.loads((outdir / template_file).read_text())
    return found


def resources(all_templates: dict[str, dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [
        r.get("Properties", {})
        for t in all_templates.values()
        for r in t.get("Resources", {}).values()
        if r["Type"] == type_
    ]


def sample_interval(all_templates: dict[str, dict[str, Any]]) -> tuple[int, int | None]:
    """The monitor's SAMPLE_INTERVAL_SECONDS, and its IDLE_SAMPLES (None: it never idles)."""
    (monitor,) = [
        f
        for f in resources(all_templates, "AWS::Lambda::Function")
        if f["Handler"] == "worker_monitor.handler"
    ]
    variables = monitor["Environment"]["Variables"]
    idle = variables.get("IDLE_SAMPLES")
    return int(variables["SAMPLE_INTERVAL_SECONDS"]), None if idle is None else int(idle)


def scale_out_alarm(all_templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The alarm that adds tasks: >= threshold on PendingTasks, wired to a ChangeInCapacity policy."""
    candidates = []
    for alarm in resources(all_templates, "AWS::CloudWatch::Alarm"):
        names = {
            q["MetricStat"]["Metric"]["MetricName"] for q in alarm.get("Metrics", []) if "MetricStat" in q
        }
        if (
            names == {metrics.PENDING_TASKS}
            and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        ):
            candidates.append(alarm)
    (alarm,) = candidates
    return alarm


def latency(outdir: Path) -> dict[str, Any]:
    found = templates(outdir)
    interval, idle_samples = sample_interval(found)
    alarm = scale_out_alarm(found)
    (period,) = {q["MetricStat"]["Period"] for q in alarm["Metrics"] if "MetricStat" in q}
    datapoints = int(alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]))
    woken_by = waking_producers(found)
    return {
        "sample_interval_s": interval,
        "alarm_period_s": period,
        "datapoints_to_alarm": datapoints,
        "threshold_pending_tasks": alarm["Threshold"],
        "worst_case_s": interval + period * datapoints,
        "idle_samples": idle_samples,
        "waking_producers": woken_by,
        "idle_woken_worst_case_s": WAKE_SECONDS + period * datapoints if woken_by else None,
        "idle_not_woken_worst_case_s": SCHEDULE_SECONDS + period * datapoints if idle_samples else None,
    }


def waking_producers(all_templates: dict[str, dict[str, Any]]) -> list[str]:
    """The functions told which monitor to wake (MONITOR_FUNCTION_NAME)."""
    return sorted(
        f["Handler"].split(".")[0]
        for f in resources(all_templates, "AWS::Lambda::Function")
        if "MONITOR_FUNCTION_NAME" in f.get("Environment", {}).get("Variables", {})
    )


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cdk-out", type=Path, help="read this cloud assembly instead of synthesizing")
    parser.add_argument("--no-pytest", action="store_true", help="skip timing the infra test suite")
    args = parser.parse_args()

    timings: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="beatless-bench-") as tmp:
        outdir = args.cdk_out
        if outdir is None:
            outdir = Path(tmp) / "cdk.out"
            env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
            synth = [str(CDK), "synth", "--quiet", "--output", str(outdir)]
            timings.append(("npx cdk synth, cold (empty cdk.out)", timed(synth, env)))
            timings.append(("npx cdk synth, warm (same cdk.out)", timed(synth, env)))
        figures = latency(outdir)

    if not args.no_pytest:
        pytest = [sys.executable, "-m", "pytest", "tests/infra", "-q", "-p", "no:cacheprovider"]
        timings.append(("pytest tests/infra (one synth + variant)", timed(pytest)))

    naive = NAIVE_PUBLISH_SECONDS + NAIVE_ALARM_PERIOD_SECONDS * NAIVE_ALARM_DATAPOINTS
    ours = figures["worst_case_s"]
    from_zero = "yes" if figures["threshold_pending_tasks"] <= 1 else "no"
    verdict = "met" if ours <= GOAL_SECONDS else "NOT met"
    rows = [
        ("sampling / publish interval (s)", figures["sample_interval_s"], NAIVE_PUBLISH_SECONDS),
        ("alarm period (s)", figures["alarm_period_s"], NAIVE_ALARM_PERIOD_SECONDS),
        ("datapoints to alarm", figures["datapoints_to_alarm"], NAIVE_ALARM_DATAPOINTS),
        ("worst case (s)", ours, naive),
        ("leaves 0 tasks for one pending task", from_zero, "no"),
    ]
    print("Worst case, first pending task -> scale-out decision (from the templates)")
    print(f"  {'':44} {'Beatless':>10} {'naive':>10}")
    for label, beatless, peer in rows:
        print(f"  {label:44} {beatless!s:>10} {peer!s:>10}")
    print(f"  ratio naive / Beatless: {naive / ours:.1f}x; goal <= {GOAL_SECONDS} s: {verdict}")
    if figures["idle_samples"] is not None:
        woken, not_woken = figures["idle_woken_worst_case_s"], figures["idle_not_woken_worst_case_s"]
        print(f"Idle service (the monitor takes {figures['idle_samples']} reading(s) a run)")
        producers = ", ".join(figures["waking_producers"]) or "none"
        if woken is not None:
            woken_verdict = "met" if woken <= GOAL_SECONDS else "NOT met"
            print(f"  task sent by a producer that wakes the monitor ({producers}): "
                  f"~{woken} s (wake ~{WAKE_SECONDS} s assumed + alarm); goal: {woken_verdict}")  # fmt: skip
        print(f"  task put on Redis by anything else (no wake): {not_woken} s (next scheduled run + alarm)")
    if timings:
        print("Wall times on this machine")
        for label, seconds in timings:
            print(f"  {label:44} {seconds:>9.1f} s")


if __name__ == "__main__":
    main()
