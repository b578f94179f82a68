"""How well a community detection recovered a known answer."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence


def normalized_mutual_information(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """NMI of two labelings of the same items (arithmetic-mean normalization): 1.0 when
    they group the items alike, near 0 when one says nothing of the other."""
    n = len(a)
    if n == 0 or n != len(b):
        raise ValueError(f"two labelings of the same items are needed, got {len(a)} and {len(b)} labels")
    joint, left, right = Counter(zip(a, b, strict=True)), Counter(a), Counter(b)
    mutual = sum(c / n * math.log(c * n / (left[x] * right[y])) for (x, y), c in joint.items())

    def entropy(counts: Counter[Hashable]) -> float:
        return -sum(c / n * math.log(c / n) for c in counts.values())

    total = entropy(left) + entropy(right)
    return 1.0 if total == 0 else 2 * mutual / total
