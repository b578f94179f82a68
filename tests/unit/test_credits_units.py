"""Pure parts of the credit layer and the job runtime: exact money, business
periods, deadlines, metric names, database settings and secrets (no server)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beatless.credits.money import MICRO_PER_CREDIT, micro, to_credits, to_micro
from beatless.db.connect import parse_secret
from beatless.db.settings import DatabaseSettings
from beatless.errors import InvalidInputError
from beatless.jobs.deadline import Deadline
from beatless.jobs.periods import (
    day_of,
    first_day,
    hour_of,
    month_of,
    previous_day,
    previous_hour,
    previous_month,
    slot,
)
from beatless.jobs.runtime import metric_name
from beatless.settings import redact_url
from tests.support.lambda_context import FakeLambdaContext


def test_credits_convert_exactly_both_ways() -> None:
    assert to_micro("0.000001") == 1
    assert to_micro(Decimal("8000")) == 8_000 * MICRO_PER_CREDIT
    assert to_micro("99999999.99") == 99_999_999_990_000
    assert to_credits(123_456_789) == Decimal("123.456789")
    assert to_micro("0.1") + to_micro("0.2") == to_micro("0.3")  # what floats get wrong


@pytest.mark.parametrize("value", [0.1, True, "0.0000001", "abc", "NaN", "Infinity"])
def test_inexact_or_non_numbers_are_refused(value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        to_micro(value, field="price")  # type: ignore[arg-type]
    assert info.value.field == "price"


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_micro_credits_round_trip(amount: int) -> None:
    assert to_micro(to_credits(amount)) == amount


@pytest.mark.parametrize("value", [1.0, "5", None, True, 0, -3, 2**63])
def test_amount_arguments_are_checked(value: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        micro("amount_micro", value)
    assert info.value.field == "amount_micro"


def test_periods_come_from_the_scheduled_time() -> None:
    t = datetime(2026, 3, 1, 0, 7, 30, tzinfo=UTC)
    assert slot(t, 900).label == "2026-03-01T00:00Z"
    assert (hour_of(t).start, hour_of(t).end) == (
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 1, tzinfo=UTC),
    )
    assert previous_hour(t).label == "2026-02-28T23:00Z"
    assert day_of(t).label == "2026-03-01" and previous_day(t).label == "2026-02-28"
    assert previous_month(t).label == "2026-02"
    assert (previous_month(t).end - previous_month(t).start).days == 28  # February 2026
    assert (month_of(datetime(2026, 1, 31, 23, 59, tzinfo=UTC)).end) == datetime(2026, 2, 1, tzinfo=UTC)
    assert (
        month_of(datetime(2028, 2, 10, tzinfo=UTC)).end - month_of(datetime(2028, 2, 10, tzinfo=UTC)).start
    ).days == 29
    assert first_day(previous_month(datetime(2026, 1, 2, 6, tzinfo=UTC))) == date(2025, 12, 1)


def test_slots_are_aligned_and_contain_their_time() -> None:
    for minute in (0, 14, 15, 44, 59):
        t = datetime(2026, 11, 23, 9, minute, 59, 999_999, tzinfo=UTC)
        period = slot(t, 900)
        assert period.start <= t < period.end
        assert period.start.minute % 15 == 0 and period.start.second == 0


def test_deadline_keeps_the_margin() -> None:
    context = FakeLambdaContext(remaining_ms=30_000, shrink_ms=18_000)  # 30 s, then 12 s, then 0
    deadline = Deadline.from_context(context, margin_ms=10_000)
    assert deadline.allows(5_000)  # 30 s left
    assert not deadline.allows(5_000)  # 12 s left: only 2 s above the margin
    assert deadline.remaining_ms() == -10_000  # nothing left: 10 s below the margin
    assert Deadline.from_context(None, margin_ms=10_000).allows(10**9)  # local run: no deadline


def test_metric_names() -> None:
    assert metric_name("released") == "Released"
    assert metric_name("released_micro") == "ReleasedMicro"
    with pytest.raises(ValueError, match="snake_case"):
        metric_name("Released")


def test_database_settings_from_the_environment() -> None:
    local = DatabaseSettings.from_env({"DATABASE_URL": "postgresql://app:pw@127.0.0.1:5432/db"})
    assert local.sslmode is None and local.statement_timeout_ms == 30_000
    assert "pw" not in local.describe() and "***" in local.describe()
    aws = DatabaseSettings.from_env(
        {"DATABASE_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf"}
    )
    assert (aws.sslmode, aws.sslrootcert) == ("verify-full", "system")
    bundle = DatabaseSettings.from_env(
        {"DATABASE_SECRET_ARN": "arn:aws:secretsmanager:x", "DATABASE_SSLROOTCERT": "/var/task/rds.pem"}
    )
    assert bundle.sslrootcert == "/var/task/rds.pem"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://h/db", "DATABASE_SECRET_ARN": "arn:x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://h/db"}, "DATABASE_URL"),
        ({"DATABASE_SECRET_ARN": "my-secret"}, "DATABASE_SECRET_ARN"),
        ({"DATABASE_SECRET_ARN": "arn:x", "DATABASE_SSLMODE": "disable"}, "DATABASE_SSLMODE"),
        ({"DATABASE_SECRET_ARN": "arn:x", "DATABASE_SSLMODE": "prefer"}, "DATABASE_SSLMODE"),
        ({"DATABASE_URL": "postgresql://h/db", "DATABASE_SSLMODE": "sometimes"}, "DATABASE_SSLMODE"),
        ({"DATABASE_URL": "postgresql://h/db", "STATEMENT_TIMEOUT_MS": "soon"}, "STATEMENT_TIMEOUT_MS"),
        ({"DATABASE_URL": "postgresql://h/db", "STATEMENT_TIMEOUT_MS": "10"}, "STATEMENT_TIMEOUT_MS"),
        (
            {"DATABASE_URL": "postgresql://u:hunter2@h/db", "AWS_LAMBDA_FUNCTION_NAME": "job"},
            "DATABASE_URL",
        ),
        (
            {"DATABASE_URL": "postgresql://u@h/db?password=hunter2", "AWS_LAMBDA_FUNCTION_NAME": "job"},
            "DATABASE_URL",
        ),
    ],
)
def test_bad_database_settings_name_the_variable_and_never_show_a_password(
    env: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        DatabaseSettings.from_env(env)
    assert info.value.field == field
    assert "hunter2" not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redact_url("postgresql://h/db?password=x&user=u") == "postgresql://h/db?password=***&user=u"


def test_rds_secrets_are_parsed_strictly() -> None:
    secret = (
        '{"engine": "postgres", "host": "db", "port": 5432, "username": "app", "password": "pw", '
        '"dbname": "b"}'
    )
    credentials = parse_secret(secret)
    assert (credentials.host, credentials.port, credentials.user, credentials.dbname) == (
        "db",
        5432,
        "app",
        "b",
    )
    assert "pw" not in repr(credentials)
    for broken, field in [
        ("not json", "DATABASE_SECRET_ARN"),
        ('{"host": "db", "username": "app"}', "DATABASE_SECRET_ARN.password"),
        ('{"host": "db", "username": "app", "password": "pw", "port": "x"}', "DATABASE_SECRET_ARN.port"),
    ]:
        with pytest.raises(InvalidInputError) as info:
            parse_secret(broken)
        assert info.value.field == field
