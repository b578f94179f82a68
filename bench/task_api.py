"""Task API latency on loopback: launch -> 202 and a status read, beside a FastAPI + Uvicorn
peer doing the same work, and the API Lambda's first request.

    .venv/bin/python bench/task_api.py               # 1,000 requests of each kind per server
    .venv/bin/python bench/task_api.py --smoke       # 50

A throwaway Redis and PostgreSQL (migrated; one graph with credits). Beatless: the local
server (`beatless.local.api_server`: each request becomes the HTTP API v2 event the Lambda gets
and goes through Powertools' resolver, validation and `TaskApi`). The peer: a FastAPI app
built here, served by Uvicorn, whose two routes take the same pydantic body and call the
same `TaskApi.launch` / `TaskApi.status` — the same Redis and PostgreSQL work, so the
difference is the framework and the server. One keep-alive client sends the requests one
after the other (each launch a new operation id: a task row and a message each).
Prints median and p99 of each, the ratio to the peer, and, in a fresh process, the import
of `bin/lambda/task_api.py` plus its first request (what a cold start adds).
"""

# No `from __future__ import annotations`: FastAPI reads the peer's route annotations at run time.
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

SCHEMA = {"nodes": [{"name": "Company", "primary_key": "id", "properties": {"id": "STRING"}}]}
TOKEN = "bench-token-0123456789abcdef"


def peer_app(api: Any) -> Any:
    from typing import Annotated

    from fastapi import Body, FastAPI
    from fastapi.responses import JSONResponse

    from beatless.api import models

    app = FastAPI()

    @app.post("/tasks/launch", status_code=202)
    def launch(request: Annotated[models.LaunchRequest, Body()]) -> Any:
        return JSONResponse(api.launch(request).model_dump(mode="json"), status_code=202)

    @app.get("/tasks/{task_id}")
    def status(task_id: str) -> Any:
        return JSONResponse(api.status(task_id).model_dump(mode="json"))

    return app


def measure(client: Any, count: int, prefix: str) -> dict[str, list[float]]:
    launches, reads = [], []
    task_id = None
    for i in range(count):
        body = {"task_type": "create_graph", "params": {"graph_id": "g1", "schema": SCHEMA},
                "operation_id": f"{prefix}-{i}"}  # fmt: skip
        start = time.perf_counter()
        answer = client.post("/tasks/launch", json=body)
        launches.append(time.perf_counter() - start)
        assert answer.status_code == 202, answer.text
        task_id = task_id or answer.json()["task_id"]
    for _ in range(count):
        start = time.perf_counter()
        answer = client.get(f"/tasks/{task_id}")
        reads.append(time.perf_counter() - start)
        assert answer.status_code == 200, answer.text
    return {"launch": launches, "status": reads}


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def cold_start(env: dict[str, str]) -> tuple[float, float]:
    """ms to import bin/lambda/task_api.py, and to answer its first request (GET /tasks/x), fresh."""
    probe = "\n".join([
        "import time",
        "t0 = time.perf_counter()",
        "import task_api",
        "t1 = time.perf_counter()",
        "from beatless.local.api_server import http_api_event",
        "from beatless.local.context import LocalContext",
        "event, context = http_api_event('GET', '/tasks/nope', {}, b''), LocalContext('task_api', 512, 30)",
        "answer = task_api.handler(event, context)",
        "t2 = time.perf_counter()",
        "assert answer['statusCode'] == 404, answer",
        "print((t1 - t0) * 1000, (t2 - t1) * 1000)",
    ])  # fmt: skip
    paths = f"{ROOT / 'src'}:{ROOT / 'bin' / 'lambda'}"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PYTHONPATH": paths, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="50 requests of each kind")
    args = parser.parse_args()
    count = 50 if args.smoke else args.requests

    import httpx
    import psycopg
    import uvicorn

    from beatless import credits
    from beatless.api.app import TaskHttpApp
    from beatless.api.environment import task_api
    from beatless.db.migrate import migrate
    from beatless.local.api_server import TaskApiServer
    from beatless.local.servers import PostgresServer, RedisServer, free_port

    with RedisServer() as broker, PostgresServer() as postgres:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            migrate(conn)
            credits.create_user(conn, "bench")
            credits.create_graph(conn, "g1", "bench", "standard", datetime.now(UTC))
            account = credits.open_graph_account(conn, "g1").id
            credits.post(conn, account, "adjustment", 10**15, "bench-seed")
        env = {**os.environ, "BROKER_URL": broker.url, "DATABASE_URL": postgres.dsn,
               "INSTANCE_REGISTRY_TABLE": "i", "GRAPH_REGISTRY_TABLE": "g", "UPLOADS_BUCKET": "u",
               "STAGING_BUCKET": "s"}  # fmt: skip
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        ours_api, peer_api = task_api(env), task_api(env)
        results = {}
        with (
            TaskApiServer(TaskHttpApp(lambda: ours_api), lambda: ours_api, TOKEN) as server,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
        ):
            measure(client, min(count, 20), "warm-ours")
            results["beatless (local server, Powertools)"] = measure(client, count, "ours")
        port = free_port()
        config = uvicorn.Config(
            peer_app(peer_api), host="127.0.0.1", port=port, log_level="error", access_log=False
        )
        peer = uvicorn.Server(config)
        thread = threading.Thread(target=peer.run, daemon=True)
        thread.start()
        while not peer.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            measure(client, min(count, 20), "warm-peer")
            results["peer (FastAPI + Uvicorn)"] = measure(client, count, "peer")
        peer.should_exit = True
        thread.join(10)
        imported, first = cold_start(env)
        launched = 2 * (count + min(count, 20))  # both servers, warm-up included
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        import redis

        from beatless.queues.transport import TransportOptions

        queue = redis.Redis.from_url(broker.url)
        messages = sum(queue.llen(key) for key in TransportOptions().queue_list_keys("graph"))

    verdict = "ok" if rows == messages == launched else "WRONG"
    print(f"checks: {launched} launches, {rows} task rows, {messages} messages queued {verdict}")
    peer_name = "peer (FastAPI + Uvicorn)"
    print(f"{count} requests each, one keep-alive client, loopback")
    print(f"{'server':<38} {'launch median':>14} {'p99':>8} {'status median':>14} {'p99':>8}")
    for name, samples in results.items():
        lm, lp = summary(samples["launch"])
        sm, sp = summary(samples["status"])
        print(f"{name:<38} {lm:>11.2f} ms {lp:>5.2f} ms {sm:>11.2f} ms {sp:>5.2f} ms")
    ours = next(iter(results.values()))
    for kind in ("launch", "status"):
        ratio = summary(ours[kind])[0] / summary(results[peer_name][kind])[0]
        print(f"{kind}: beatless median / peer median = {ratio:.2f}")
    print(f"task_api cold start: import {imported:.0f} ms + first request {first:.0f} ms "
          f"= {imported + first:.0f} ms (goal: import <= 500 ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
