"""The product's task priority scale and how it maps onto Celery priorities.

Beatless speaks of priorities 1-10, 10 the most urgent. Celery on Redis
(kombu) serves priority 0 first when ``queue_order_strategy`` is
``"priority"``, rounds a priority down to one of its ``priority_steps`` and
clamps it to 0..9. The mapping is therefore ``celery = 10 - product``:

    ======== ================ ======== ===========================
    product  level            celery   kombu list (Beatless steps)
    ======== ================ ======== ===========================
    10       critical         0        ``<queue>``
    9        critical         1        ``<queue>\\x06\\x161``
    8        billing          2        ``<queue>\\x06\\x162``
    7        cleanup          3        ``<queue>\\x06\\x163``
    6        collection       4        ``<queue>\\x06\\x164``
    5        health, normal   5        ``<queue>\\x06\\x165``
    4        maintenance      6        ``<queue>\\x06\\x166``
    3        (low)            7        ``<queue>\\x06\\x167``
    2        (low)            8        ``<queue>\\x06\\x168``
    1        (lowest)         9        ``<queue>\\x06\\x169``
    ======== ================ ======== ===========================

With Beatless' default ``priority_steps`` (0..9, see
`beatless.queues.transport.BEATLESS_PRIORITY_STEPS`) every product level has its own
list, so the order is strict. With kombu's own default steps (0, 3, 6, 9)
neighbouring levels share a list and run first-in first-out among
themselves; a more urgent level is still never served after a less urgent
one, because the mapping only ever decreases.

A message published without a priority lands in kombu's priority-0 list,
the most urgent one. The worker app therefore routes every task to
`NORMAL` (product 5) unless the producer names a priority.
"""

from __future__ import annotations

from enum import IntEnum

from beatless.errors import InvalidInputError

LOWEST = 1
HIGHEST = 10
CELERY_MOST_URGENT = 0
CELERY_LEAST_URGENT = 9


class Level(IntEnum):
    """Named levels of the product scale (the value is the product priority)."""

    CRITICAL = 9  # 9 and 10 are both critical; 10 jumps ahead of other critical work
    BILLING = 8
    CLEANUP = 7
    COLLECTION = 6
    HEALTH = 5
    MAINTENANCE = 4


NORMAL = 5  # what a task gets when its producer names no priority


def _check(product_priority: object, field: str) -> int:
    if isinstance(product_priority, bool) or not isinstance(product_priority, int):
        raise InvalidInputError(field, f"must be an integer {LOWEST}..{HIGHEST}, got {product_priority!r}")
    if not LOWEST <= product_priority <= HIGHEST:
        raise InvalidInputError(
            field, f"must be between {LOWEST} and {HIGHEST} (10 most urgent), got {product_priority}"
        )
    return int(product_priority)


def celery_priority(product_priority: int, field: str = "priority") -> int:
    """The Celery priority (0 served first) of a product priority (10 most urgent)."""
    return HIGHEST - _check(product_priority, field)


def product_priority(celery_value: int, field: str = "celery_priority") -> int:
    """The inverse of `celery_priority`."""
    if isinstance(celery_value, bool) or not isinstance(celery_value, int):
        raise InvalidInputError(field, f"must be an integer 0..9, got {celery_value!r}")
    if not CELERY_MOST_URGENT <= celery_value <= CELERY_LEAST_URGENT:
        raise InvalidInputError(field, f"must be between 0 and 9, got {celery_value}")
    return HIGHEST - celery_value


def level_name(product_priority: int, field: str = "priority") -> str:
    """The name of the band a product priority falls in ("critical" for 9-10, "low" below 4)."""
    value = _check(product_priority, field)
    if value >= Level.CRITICAL:
        return "critical"
    if value < Level.MAINTENANCE:
        return "low"
    return Level(value).name.lower()


DEFAULT_CELERY_PRIORITY = celery_priority(NORMAL)


def mapping_table() -> list[tuple[int, str, int]]:
    """(product priority, level, Celery priority), most urgent first: the README table."""
    return [(p, level_name(p), celery_priority(p)) for p in range(HIGHEST, LOWEST - 1, -1)]
