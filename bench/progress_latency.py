"""Progress latency: from an operation's progress update to a reader of its stream.

    .venv/bin/python bench/progress_latency.py              # 2,000 updates
    .venv/bin/python bench/progress_latency.py --smoke      # 200

A throwaway Redis; a publisher process reports progress the way a task does
(`beatless.operations.progress.ProgressStream.publish`: XADD with the cap, EXPIRE, one
round trip) every --interval-ms, each event carrying the wall time it was sent; this
process follows the stream as the task API's server-sent events will (`read` with a
blocking XREAD, resuming after the last id) and records the delay to each event's
arrival. Beside it, the way a client follows a task without the stream: polling the
stored Celery task state every 200 ms (`beatless.workers.results.DEFAULT_POLL_SECONDS`),
simulated from the same send times (its delay is the wait for the next poll plus the
same read). Prints median, p99 and max of both.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import itertools

from graph_common import load_average

POLL_SECONDS = 0.2


def publish(url: str, count: int, interval: float) -> None:
    import redis

    from beatless.operations.progress import ProgressStream

    stream = ProgressStream(redis.Redis.from_url(url), "bench-op")
    for i in range(count):
        stream.publish(state="running", stage="work", percent=100 * i / count, message=str(time.time_ns()))
        time.sleep(interval)
    stream.publish(state="succeeded", stage="done", percent=100, message=str(time.time_ns()))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2_000)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.count = 200
    import redis

    from beatless.local.servers import RedisServer
    from beatless.operations.progress import ProgressStream

    with RedisServer() as server:
        reader = ProgressStream(redis.Redis.from_url(server.url), "bench-op")
        publisher = multiprocessing.get_context("spawn").Process(
            target=publish, args=(server.url, args.count, args.interval_ms / 1000)
        )
        publisher.start()
        delays: list[float] = []
        sent: list[float] = []
        after = "0-0"
        done = False
        while not done:
            for event in reader.read(after, count=500, block_ms=2000):
                arrived = time.time_ns()
                after = event.id
                sent.append(int(event.message) / 1e9)
                delays.append((arrived - int(event.message)) / 1e6)
                done = event.state == "succeeded"
        publisher.join(30)
    read_ms = statistics.median(delays)
    # Polling every 200 ms from a random phase: the wait for the next poll, then the same read.
    polled = [((POLL_SECONDS - (t % POLL_SECONDS)) * 1000) + read_ms for t in sent]
    print()
    print(f"{len(delays):,} progress updates, one every {args.interval_ms:g} ms ({load_average()})")
    print(f"{'reader':<34}{'median':>10}{'p99':>10}{'max':>10}  (ms)")
    print("-" * 70)
    for name, values in (
        ("stream (XREAD BLOCK, resumable)", delays),
        ("task state polled every 200 ms", polled),
    ):
        median, p99 = statistics.median(values), percentile(values, 0.99)
        print(f"{name:<34}{median:>10.2f}{p99:>10.2f}{max(values):>10.2f}")
    ordered = all(a <= b for a, b in itertools.pairwise(sent))
    complete = len(delays) == args.count + 1 and ordered
    print(f"check: every update arrived, in order: {'ok' if complete else 'WRONG'}")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
