"""The task API on loopback for tests (not shipped): `TaskApiServer` over a `TaskApi` built
from an environment, and an authorized HTTP client for it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx

from beatless.api.app import TaskHttpApp
from beatless.api.environment import task_api
from beatless.local.api_server import TaskApiServer

TOKEN = "test-token-0123456789abcdef"


@contextmanager
def running_api(env: Mapping[str, str]) -> Iterator[tuple[TaskApiServer, httpx.Client]]:
    api = task_api(env)
    server = TaskApiServer(TaskHttpApp(lambda: api), lambda: api, TOKEN)
    with (
        server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        try:
            yield server, client
        finally:
            api.resources.close()
