"""Container health check: ``python -m worker.healthcheck [--node NAME] [--timeout S]``.

Trigger: Docker's ``HEALTHCHECK`` / the ECS container health check, inside
the worker's container. Side effects: none (one remote-control broadcast
through the broker, addressed to this container's worker node only; nothing
is put on the task queues, so the scaler counts nothing).

It asks the worker about its TASK consumer (the remote-control command
``beatless_consumer``, `worker/consumer_state.py`): which queues it consumes,
whether its broker connection is up and whether it is really polling them
(`beatless.workers.health.verdict`). The worker's main process answers from
its event loop, even while every pool process is busy with a long task, so a
busy worker is healthy. Unhealthy (exit 1, the reason on stdout):

- no answer: the main process is hung or stopped, or has lost the broker and
  not (yet) reconnected;
- an answer, but the task consumer does not consume every queue of
  ``WORKER_QUEUES`` (cancelled, or gone), has no connection, or its ``BRPOP``
  got no reply / was not sent again for longer than Redis takes to answer
  (``--stall-seconds`` beyond the ``BRPOP`` timeout): the remote-control
  connection works while the one tasks arrive on does not;
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

from beatless.workers.health import COMMAND, DEFAULT_STALL_SECONDS, verdict

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1


class _DeadlineError(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _DeadlineError


def check(node: str, timeout: float, stall_seconds: float = DEFAULT_STALL_SECONDS) -> tuple[bool, str]:
    from worker.app import app  # built from the environment on first access

    expected = set(app.settings.queues)
    # Fail fast when the broker is down instead of retrying for minutes.
    app.conf.broker_connection_timeout = timeout
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_max_retries = 0
    replies = app.control.broadcast(COMMAND, destination=[node], reply=True, timeout=timeout)
    report = next((reply[node] for reply in replies or [] if node in reply), None)
    if report is None:
        return False, f"no answer from {node} within {timeout:g} s"
    if not isinstance(report, dict) or "error" in report:
        return False, f"{node} cannot report its consumer: {report!r}"
    healthy, reason = verdict(report, expected, stall_seconds=stall_seconds)
    return healthy, f"{node} {reason}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--node", default=f"celery@{socket.gethostname()}", help="worker node name")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=DEFAULT_STALL_SECONDS,
        help="how much longer than the BRPOP timeout polling may pause (default 10)",
    )
    args = parser.parse_args(argv)
    # A hard deadline for everything (import, connect, ask): a health check must not hang.
    signal.signal(signal.SIGALRM, _on_alarm)
    hard_limit = args.timeout + 5
    signal.setitimer(signal.ITIMER_REAL, hard_limit)
    try:
        healthy, reason = check(args.node, args.timeout, args.stall_seconds)
    except _DeadlineError:
        healthy, reason = False, f"no result within {hard_limit:g} s"
    except Exception as exc:  # an unreachable broker is a verdict here, not a crash
        healthy, reason = False, f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(("healthy: " if healthy else "unhealthy: ") + reason)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
