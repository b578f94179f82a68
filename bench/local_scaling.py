"""Local scaling latency: from the first pending task to a worker consuming it, and from the
last finished task to zero workers — median and worst over N runs of `beatless local`.

    .venv/bin/python bench/local_scaling.py            # 10 runs
    .venv/bin/python bench/local_scaling.py --smoke    # 1 run

Each run is the real local system without its extras (no graph nodes, demo, scheduled jobs
or task API): a burst of --tasks sample tasks enqueued at once, the monitor sampling every
--sample-interval seconds (its resolution is the figures' resolution), real Celery workers
started and stopped by the scaling rules with the local periods (10 s alarm periods, 20 s
idle window; deployed: 10 s and 5 minutes). Printed beside the rules' own bounds: a scale-out
is decided within one 10 s period of a pending task, a scale-in after the idle window.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--sample-interval", type=float, default=1.0)
    parser.add_argument("--smoke", action="store_true", help="1 run")
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs

    from beatless.local.runner import LOCAL_SCALING, LocalOptions, run

    consumed, scaled_in, failures = [], [], 0
    for n in range(runs):
        options = LocalOptions(
            tasks=args.tasks, steps=1, step_seconds=0.2, sample_interval_seconds=args.sample_interval,
            max_workers=2, timeout_seconds=180, graph_nodes=0, demo=False, schedule_speed=0, task_api=False,
            state_dir=Path(tempfile.mkdtemp(prefix="beatless-bench-")),
        )  # fmt: skip
        report = run(options, out=io.StringIO())
        shutil.rmtree(options.state_dir, ignore_errors=True)
        if not report.ok or None in (report.first_consumed_after_seconds, report.scaled_in_after_seconds):
            failures += 1
            print(f"run {n + 1}: WRONG {report.as_dict()}")
            continue
        assert report.first_consumed_after_seconds is not None and report.scaled_in_after_seconds is not None
        assert report.drained_after_seconds is not None
        consumed.append(report.first_consumed_after_seconds)
        scaled_in.append(report.scaled_in_after_seconds - report.drained_after_seconds)
        print(f"run {n + 1}: first pending -> consumed {consumed[-1]:.1f} s; last finished -> 0 workers "
              f"{scaled_in[-1]:.1f} s", flush=True)  # fmt: skip
    if consumed:
        out_bound = LOCAL_SCALING.scale_out_period_seconds
        print(f"first pending task -> a worker consuming it: median {statistics.median(consumed):.1f} s, "
              f"worst {max(consumed):.1f} s (scale-out decided within one {out_bound} s period, then a "
              "worker process starts)")  # fmt: skip
        print(f"last finished task -> zero workers: median {statistics.median(scaled_in):.1f} s, worst "
              f"{max(scaled_in):.1f} s (idle window {LOCAL_SCALING.scale_in_idle_seconds} s)")  # fmt: skip
    print(f"checks: {runs - failures} of {runs} runs applied every task once and scaled in "
          + ("ok" if failures == 0 else "WRONG"))  # fmt: skip
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
