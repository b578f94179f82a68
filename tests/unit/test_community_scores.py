"""Normalized mutual information: the score the demo and the tests judge a community
detection by."""

from __future__ import annotations

import pytest

from beatless.analytics.scores import normalized_mutual_information


def test_the_same_grouping_under_other_labels_scores_one() -> None:
    assert normalized_mutual_information([0, 0, 1, 1, 2], ["b", "b", "a", "a", "c"]) == pytest.approx(1.0)


def test_a_grouping_that_says_nothing_of_the_other_scores_zero() -> None:
    assert normalized_mutual_information([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)


def test_a_partly_right_grouping_scores_between() -> None:
    score = normalized_mutual_information([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1])
    assert 0.2 < score < 0.9


def test_labelings_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same items"):
        normalized_mutual_information([0, 1], [0])
