"""`beatless api` (the task API on this machine) and `beatless tasks ...` (its client).

    beatless api [--port N]                 serve the task API (environment: beatless.api.environment)
    beatless tasks list                     the catalogue
    beatless tasks launch TYPE PARAMS_JSON [--operation-id ID] [--priority N] [--follow]
    beatless tasks status TASK_ID
    beatless tasks follow TASK_ID           its progress as a bar, to the end (exit 1 unless SUCCESS)
    beatless tasks revoke TASK_ID
    beatless tasks retry TASK_ID [--follow]
    beatless tasks stats

The client reads `BEATLESS_API_URL` (default http://127.0.0.1:8787) and
`BEATLESS_API_TOKEN` (the token `beatless api` was started with).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from typing import Any, TextIO

from beatless.api.client import ApiError, TaskApiClient
from beatless.errors import InvalidInputError

DEFAULT_URL = "http://127.0.0.1:8787"
DEFAULT_PORT = 8787
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")
RECONNECTS = 5


def add_parsers(sub: Any) -> None:
    api = sub.add_parser("api", help="serve the task API on this machine (bearer token)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    api.set_defaults(func=serve)

    tasks = sub.add_parser("tasks", help="launch, follow, revoke and retry heavy tasks (the task API)")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    tasks_sub.add_parser("list", help="the task catalogue").set_defaults(func=list_tasks)
    launch = tasks_sub.add_parser("launch", help="launch an operation")
    launch.add_argument("task_type")
    launch.add_argument("params", help="the parameters as JSON")
    launch.add_argument("--operation-id")
    launch.add_argument("--priority", type=int, default=5)
    launch.add_argument("--follow", action="store_true", help="then follow it to its end")
    launch.set_defaults(func=launch_task)
    for name, func, text in (
        ("status", status, "a task's state"),
        ("follow", follow_task, "follow a task's progress to its end"),
        ("revoke", revoke, "revoke a task"),
        ("retry", retry, "retry a failed or revoked task"),
    ):
        command = tasks_sub.add_parser(name, help=text)
        command.add_argument("task_id")
        if name == "retry":
            command.add_argument("--follow", action="store_true")
        command.set_defaults(func=func)
    tasks_sub.add_parser("stats", help="queues, workers, recent failures").set_defaults(func=stats)


def client_from_env(env: Any = os.environ) -> TaskApiClient:
    token = env.get("BEATLESS_API_TOKEN")
    if not token:
        raise InvalidInputError("BEATLESS_API_TOKEN", "is not set: the token `beatless api` printed")
    return TaskApiClient(env.get("BEATLESS_API_URL") or DEFAULT_URL, token)


def serve(args: argparse.Namespace) -> int:
    from beatless.api.app import TaskHttpApp
    from beatless.api.environment import from_environ
    from beatless.local.api_server import TaskApiServer

    token = os.environ.get("BEATLESS_API_TOKEN") or secrets.token_urlsafe(24)
    server = TaskApiServer(TaskHttpApp(from_environ), from_environ, token, host=args.host, port=args.port)
    print(f"task API on {server.url} (OpenAPI: {server.url}/openapi.json)", flush=True)
    if "BEATLESS_API_TOKEN" not in os.environ:
        print(f"export BEATLESS_API_URL={server.url} BEATLESS_API_TOKEN={token}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _call(func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def list_tasks(args: argparse.Namespace) -> int:
    catalogue = _call(client_from_env().request, "GET", "/tasks")
    for task in catalogue["tasks"]:
        limit = f"{task['time_limit_seconds']:>5} s"
        print(f"{task['task_type']:<22} {task['queue']:<7} {limit}  {task['description']}")
    return 0


def launch_task(args: argparse.Namespace) -> int:
    try:
        params = json.loads(args.params)
    except ValueError as error:
        raise InvalidInputError("params", f"not JSON: {error}") from None
    body: dict[str, Any] = {"task_type": args.task_type, "params": params, "priority": args.priority}
    if args.operation_id:
        body["operation_id"] = args.operation_id
    client = client_from_env()
    launched = _call(client.request, "POST", "/tasks/launch", body)
    _print(launched)
    return follow(client, launched["task_id"]) if args.follow else 0


def status(args: argparse.Namespace) -> int:
    _print(_call(client_from_env().request, "GET", f"/tasks/{args.task_id}"))
    return 0


def follow_task(args: argparse.Namespace) -> int:
    return follow(client_from_env(), args.task_id)


def revoke(args: argparse.Namespace) -> int:
    _print(_call(client_from_env().request, "DELETE", f"/tasks/{args.task_id}"))
    return 0


def retry(args: argparse.Namespace) -> int:
    client = client_from_env()
    launched = _call(client.request, "POST", f"/tasks/{args.task_id}/retry")
    _print(launched)
    return follow(client, launched["task_id"]) if args.follow else 0


def stats(args: argparse.Namespace) -> int:
    _print(_call(client_from_env().request, "GET", "/stats"))
    return 0


def follow(client: TaskApiClient, task_id: str, out: TextIO | None = None) -> int:
    """A progress bar over the task's events until it ends (reconnecting after the last
    event seen); 0 when it ended SUCCESS."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=out or sys.stdout)
    last: str | None = None
    state = "PENDING"
    with Progress(
        TextColumn("{task.fields[stage]:<10}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=console,
    ) as bar:
        line = bar.add_task(task_id, total=100, stage="queued", message="")
        failures = 0
        while state not in FINISHED:
            try:
                for name, data in client.events(task_id, last):  # the request is made here
                    failures = 0
                    if name == "end":
                        state = str(data["state"])
                        break
                    last = data["id"]
                    bar.update(
                        line, completed=data["percent"], stage=data["stage"], message=data["message"][:60]
                    )
            except (ApiError, OSError) as error:
                if isinstance(error, ApiError) and error.status < 500:  # unknown task: nothing to wait for
                    print(f"error: {error}", file=sys.stderr)
                    return 1
                failures += 1  # the connection dropped or the API could not answer: resume after `last`
                if failures > RECONNECTS:
                    print(f"error: the event stream failed {failures} times: {error}", file=sys.stderr)
                    return 1
                time.sleep(1.0)
    console.print(f"{task_id}: {state}")
    return 0 if state == "SUCCESS" else 1
