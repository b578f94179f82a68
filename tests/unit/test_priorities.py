"""The product's priority scale (10 most urgent) onto Celery's (0 served first).

That the order holds with a real worker is proven in
``tests/system/test_worker_priorities.py``.
"""

from __future__ import annotations

import itertools

import pytest

from beatless.errors import InvalidInputError
from beatless.queues.priorities import (
    DEFAULT_CELERY_PRIORITY,
    NORMAL,
    Level,
    celery_priority,
    level_name,
    mapping_table,
    product_priority,
)
from beatless.queues.transport import KOMBU_DEFAULT_PRIORITY_STEPS, TransportOptions


def test_named_levels_map_onto_celery_priorities() -> None:
    assert [(name.lower(), celery_priority(level)) for name, level in Level.__members__.items()] == [
        ("critical", 1),
        ("billing", 2),
        ("cleanup", 3),
        ("collection", 4),
        ("health", 5),
        ("maintenance", 6),
    ]
    assert celery_priority(10) == 0  # the most urgent level is served first
    assert celery_priority(1) == 9


def test_the_readme_table_is_the_mapping() -> None:
    assert mapping_table() == [
        (10, "critical", 0),
        (9, "critical", 1),
        (8, "billing", 2),
        (7, "cleanup", 3),
        (6, "collection", 4),
        (5, "health", 5),
        (4, "maintenance", 6),
        (3, "low", 7),
        (2, "low", 8),
        (1, "low", 9),
    ]


@pytest.mark.parametrize(
    "steps", [TransportOptions().priority_steps, KOMBU_DEFAULT_PRIORITY_STEPS], ids=["beatless", "kombu"]
)
def test_a_more_urgent_level_never_lands_in_a_later_list(steps: tuple[int, ...]) -> None:
    options = TransportOptions(priority_steps=steps)
    for more, less in itertools.combinations(range(10, 0, -1), 2):
        assert options.priority_bucket(celery_priority(more)) <= options.priority_bucket(
            celery_priority(less)
        )


def test_beatless_steps_give_every_level_its_own_list() -> None:
    options = TransportOptions()
    buckets = [options.priority_bucket(celery_priority(p)) for p in range(10, 0, -1)]
    assert buckets == sorted(set(buckets))  # strictly increasing: the order is strict
    assert len({options.queue_list_key("graph", b) for b in buckets}) == 10


def test_messages_without_priority_get_the_normal_level() -> None:
    assert NORMAL == Level.HEALTH
    assert DEFAULT_CELERY_PRIORITY == celery_priority(NORMAL) == 5


@pytest.mark.parametrize("bad", [0, 11, -1, 5.0, "5", True, None])
def test_values_off_the_scale_are_rejected_with_the_field_named(bad: object) -> None:
    with pytest.raises(InvalidInputError) as raised:
        celery_priority(bad, field="tasks[0].priority")  # type: ignore[arg-type]
    assert raised.value.field == "tasks[0].priority"
    assert "1" in raised.value.problem and "10" in raised.value.problem


def test_inverse_and_band_names() -> None:
    assert [product_priority(celery_priority(p)) for p in range(1, 11)] == list(range(1, 11))
    with pytest.raises(InvalidInputError):
        product_priority(10)
    assert [level_name(p) for p in (10, 9, 8, 4, 3, 1)] == [
        "critical",
        "critical",
        "billing",
        "maintenance",
        "low",
        "low",
    ]
