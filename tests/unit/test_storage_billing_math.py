"""The storage charge arithmetic (property-based): exact integers, rounded down,
never more than the storage used, monotonic, and sums that add up exactly."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beatless.storage import daily_charge
from beatless.storage.billing import GIB

TIB = 2**40
RATES = st.integers(min_value=0, max_value=10**9)  # up to 1,000 credits per GiB-day
INCLUDED = st.integers(min_value=0, max_value=4 * TIB)
HOURLY = st.lists(st.integers(min_value=0, max_value=64 * TIB), min_size=1, max_size=24)


@given(HOURLY, INCLUDED, RATES)
def test_the_charge_is_the_exact_amount_rounded_down_to_a_micro_credit(
    hourly: list[int], included: int, rate: int
) -> None:
    charge = daily_charge(sum(hourly), len(hourly), included, rate)
    exact = max(Fraction(0), (Fraction(sum(hourly), len(hourly)) - included) * rate / GIB)
    assert isinstance(charge.amount_micro, int)
    assert charge.amount_micro <= exact < charge.amount_micro + 1
    assert charge.average_bytes == sum(hourly) // len(hourly)
    assert (charge.snapshots, charge.included_bytes) == (len(hourly), included)


@given(HOURLY, INCLUDED, RATES, st.integers(min_value=0, max_value=TIB))
def test_more_storage_never_costs_less_and_more_included_never_costs_more(
    hourly: list[int], included: int, rate: int, extra: int
) -> None:
    base = daily_charge(sum(hourly), len(hourly), included, rate).amount_micro
    assert daily_charge(sum(hourly) + extra, len(hourly), included, rate).amount_micro >= base
    assert daily_charge(sum(hourly), len(hourly), included + extra, rate).amount_micro <= base


@given(HOURLY, INCLUDED)
def test_nothing_above_the_included_storage_costs_nothing(hourly: list[int], included: int) -> None:
    capped = [min(h, included) for h in hourly]
    assert daily_charge(sum(capped), len(capped), included, 10**6).amount_micro == 0


@given(st.lists(st.tuples(HOURLY, INCLUDED, RATES), min_size=1, max_size=31))
def test_a_month_of_charges_sums_exactly_and_stays_within_a_micro_credit_a_day_of_the_exact_total(
    days: list[tuple[list[int], int, int]],
) -> None:
    amounts = [daily_charge(sum(h), len(h), inc, rate).amount_micro for h, inc, rate in days]
    exact = sum(max(Fraction(0), (Fraction(sum(h), len(h)) - inc) * rate / GIB) for h, inc, rate in days)
    total = sum(amounts)  # integers: the ledger's sum is this, exactly
    assert total <= exact < total + len(days)
    assert total < 2**63  # fits the ledger's BIGINT


def test_whole_gib_days_cost_whole_rates() -> None:
    assert daily_charge(24 * 150 * GIB, 24, 100 * GIB, 10**6).amount_micro == 50 * 10**6
    assert daily_charge(6 * 110 * GIB, 6, 100 * GIB, 10**6).amount_micro == 10 * 10**6
    assert daily_charge(GIB - 1, 1, 0, 10**6).amount_micro == 999_999  # rounded down


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ((100, 0, 0, 1), "snapshots"),
        ((100, 25, 0, 1), "snapshots"),
        ((-1, 1, 0, 1), "byte_hours"),
        ((100, 1, 0, 1.5), "micro_per_gib_day"),
        ((100, True, 0, 1), "snapshots"),
    ],
)
def test_impossible_inputs_are_refused(args: tuple[int, int, int, int], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        daily_charge(*args)
