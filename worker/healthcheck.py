"""Container health check: ``python -m worker.healthcheck [--node NAME] [--timeout S]``.

Trigger: Docker's ``HEALTHCHECK`` / the ECS container health check, inside
the worker's container. Side effects: none (one remote-control broadcast
through the broker, addressed to this container's worker node only).

It asks the worker which queues it consumes (``inspect active_queues``).
The worker's main process answers from its event loop, even while every pool
process is busy with a long task, so a busy worker is healthy. Healthy means
an answer within ``--timeout`` that lists every queue of ``WORKER_QUEUES``.
Unhealthy (exit 1, the reason on stdout):

- no answer: the main process is hung or stopped, or has lost the broker and
  not (yet) reconnected;
- an answer without the queues: the worker no longer consumes them (its task
  consumer is gone, or a queue was cancelled);
- the broker cannot be reached from this container at all.

After a Redis restart the worker reconnects and consumes again; the check
passes again once it has (the tests prove it). ``--node`` defaults to
``celery@<hostname>``, the name ``celery worker`` gives itself.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from types import FrameType

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1


class _Deadline(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Deadline


def check(node: str, timeout: float) -> tuple[bool, str]:
    from worker.app import app  # built from the environment on first access

    expected = set(app.settings.queues)
    # Fail fast when the broker is down instead of retrying for minutes.
    app.conf.broker_connection_timeout = timeout
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    replies = app.control.inspect(destination=[node], timeout=timeout).active_queues()
    if not replies or node not in replies:
        return False, f"no answer from {node} within {timeout:g} s"
    consumed = {queue.get("name") for queue in replies[node] or []}
    missing = sorted(expected - consumed)
    if missing:
        return False, f"{node} does not consume {', '.join(missing)} (consumes {sorted(consumed)})"
    return True, f"{node} consumes {', '.join(sorted(consumed))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--node", default=f"celery@{socket.gethostname()}", help="worker node name")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    # A hard deadline for everything (import, connect, ask): a health check must not hang.
    signal.signal(signal.SIGALRM, _on_alarm)
    hard_limit = args.timeout + 5
    signal.setitimer(signal.ITIMER_REAL, hard_limit)
    try:
        healthy, reason = check(args.node, args.timeout)
    except _Deadline:
        healthy, reason = False, f"no result within {hard_limit:g} s"
    except Exception as exc:  # an unreachable broker is a verdict here, not a crash
        healthy, reason = False, f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
