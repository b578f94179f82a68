"""Enqueue a burst of sample tasks, as a producer (the web tier) would.

``python -m worker.burst --tasks 60 --step-seconds 0.5 --steps 3 --subject local``
sends `long_running` tasks round-robin over the product queues and over the
named priority levels, with the worker's own app configuration (from the
environment, like the worker), and prints one JSON line per task sent.
The local runner (`beatless local`) uses it; it is also handy against a
deployed broker from a bastion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from itertools import cycle

from beatless.queues.priorities import Level, celery_priority
from beatless.workers.settings import PRODUCT_QUEUES, WorkerSettings
from worker.app import create_app
from worker.tasks import LONG_RUNNING


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.burst", description=__doc__)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=0.5)
    parser.add_argument("--subject", default="burst")
    parser.add_argument("--queues", default=",".join(PRODUCT_QUEUES))
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    app = create_app(WorkerSettings.from_env(os.environ))
    queues = cycle([q.strip() for q in args.queues.split(",") if q.strip()])
    levels = cycle(list(Level))
    with app.producer_or_acquire() as producer:
        for _ in range(args.tasks):
            queue, level = next(queues), next(levels)
            result = app.send_task(
                LONG_RUNNING,
                kwargs={"steps": args.steps, "step_seconds": args.step_seconds, "subject": args.subject},
                queue=queue,
                priority=celery_priority(int(level)),
                producer=producer,
            )
            print(json.dumps({"id": result.id, "queue": queue, "priority": int(level)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
