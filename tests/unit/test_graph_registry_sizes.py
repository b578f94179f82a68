"""`Registries.placed_sizes` asks again for the keys DynamoDB left unprocessed (throttling,
which moto never does: here a stand-in answers BatchGetItem as DynamoDB does under load)
and fails loudly when they stay unanswered."""

from __future__ import annotations

from typing import Any

import pytest

from beatless.graphs import registry
from beatless.graphs.registry import Registries, RegistryUnavailableError


class ThrottlingDynamoDB:
    """BatchGetItem with DynamoDB's answer shape; the first `throttled` answers leave half
    of the asked keys in UnprocessedKeys."""

    def __init__(self, items: dict[str, dict[str, Any]], throttled: int) -> None:
        self.items = items
        self.throttled = throttled
        self.asked: list[int] = []

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, request),) = RequestItems.items()
        keys = [k["graph_id"] for k in request["Keys"]]
        assert len(keys) <= registry.BATCH_GET_LIMIT
        self.asked.append(len(keys))
        answered, left = (keys[: len(keys) // 2], keys[len(keys) // 2 :]) if self.throttled else (keys, [])
        self.throttled = max(0, self.throttled - 1)
        page: dict[str, Any] = {"Responses": {table: [self.items[k] for k in answered if k in self.items]}}
        if left:
            page["UnprocessedKeys"] = {table: {**request, "Keys": [{"graph_id": k} for k in left]}}
        return page


def graphs(n: int) -> dict[str, dict[str, Any]]:
    statuses = ["active", "creating", "deleted", "orphaned"]
    return {f"g{i}": {"graph_id": f"g{i}", "status": statuses[i % 4], "size_bytes": i * 10} for i in range(n)}


def test_unprocessed_keys_are_asked_again_until_every_graph_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry.time, "sleep", lambda seconds: None)
    db = ThrottlingDynamoDB(graphs(250), throttled=3)
    sizes = Registries(db, "instances", "graphs").placed_sizes(
        [f"g{i}" for i in range(250)] + ["g1", "absent"]
    )
    assert sizes == {f"g{i}": i * 10 for i in range(250) if i % 4 in (0, 1)}  # active and creating only
    assert db.asked[:4] == [100, 50, 25, 13]  # the first batch, then what was left of it
    # 251 distinct keys ("g1" asked twice counts once), and again what each throttled answer left.
    assert db.asked == [100, 50, 25, 13, 100, 51] and sum(db.asked) == 251 + 50 + 25 + 13


def test_keys_that_stay_unprocessed_fail_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.time, "sleep", lambda seconds: None)
    db = ThrottlingDynamoDB(graphs(10), throttled=10**6)
    with pytest.raises(RegistryUnavailableError, match="unprocessed"):
        Registries(db, "instances", "graphs").placed_sizes([f"g{i}" for i in range(10)])
