"""Credit holds (reservations): reserve before an operation, commit or release after.

A hold lowers the available balance (balance - held) until it is committed,
released, or expired by `credit_reservation_cleanup` after its `expires_at`.
Holds are not ledger entries (they never change the balance); committing one
posts one `hold_commit` entry of the consumed amount. One hold per
(account, operation_id): reserving again for the same operation returns it.

Lock order, shared with the database triggers and the cleanup job: a held
hold's row in `credit_reservations_held` (the cleanup locks those with SKIP
LOCKED), then its `credit_reservations` row, then its account row; several
accounts in ascending id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beatless.credits.accounts import lock_account
from beatless.credits.errors import (
    HoldNotActiveError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    UnknownHoldError,
)
from beatless.credits.ledger import check_key
from beatless.credits.money import micro
from beatless.db.arguments import Conn, check_time
from beatless.errors import InvalidInputError

STATUSES = ("held", "committed", "released", "expired")


@dataclass(frozen=True)
class Hold:
    id: int
    account_id: int
    operation_id: str
    amount_micro: int
    status: str  # held | committed | released | expired
    expires_at: datetime
    consumed_micro: int | None  # set when committed
    created: bool = False  # True only for the call that created it


_COLUMNS = "id, account_id, operation_id, amount_micro, status, expires_at, consumed_micro"


def _hold(row: Any, created: bool = False) -> Hold:
    return Hold(int(row[0]), int(row[1]), row[2], int(row[3]), row[4], row[5], row[6], created)


def reserve(conn: Conn, account_id: int, operation_id: str, amount_micro: int, expires_at: datetime) -> Hold:
    """Hold `amount_micro` (> 0) of `account_id` for `operation_id` until `expires_at`.

    Raises `InsufficientCreditsError` (field `amount_micro`) when the available
    balance is short: a hold never drives it below 0 (the database refuses it
    too). Idempotent: the same operation again returns the existing hold
    (whatever its status); with a different amount it raises `IdempotencyConflictError`.
    """
    amount = micro("amount_micro", amount_micro)
    check_key("operation_id", operation_id)
    check_time("expires_at", expires_at)
    with conn.transaction():
        account = lock_account(conn, account_id)
        existing = _find(conn, account_id, operation_id, lock=False)
        if existing is not None:
            if existing.amount_micro != amount:
                raise IdempotencyConflictError(
                    "operation_id",
                    f"operation {operation_id!r} already holds {existing.amount_micro} on account "
                    f"{account_id}, not {amount}",
                )
            return existing
        if conn.execute("SELECT %s <= now()", (expires_at,)).fetchone()[0]:
            raise InvalidInputError("expires_at", f"must be in the future, got {expires_at.isoformat()}")
        if account.available_micro < amount:
            raise InsufficientCreditsError(
                "amount_micro",
                f"{amount} exceeds the available balance of account {account_id} "
                f"({account.available_micro} = balance {account.balance_micro} - held {account.held_micro})",
            )
        row = conn.execute(
            f"INSERT INTO credit_reservations (account_id, operation_id, amount_micro, expires_at) "
            f"VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
            (account_id, operation_id, amount, expires_at),
        ).fetchone()
        return _hold(row, created=True)


def commit(conn: Conn, account_id: int, operation_id: str, consumed_micro: int) -> Hold:
    """Settle the hold: debit `consumed_micro` (0 <= consumed <= held amount), free the rest.

    Idempotent: committing again with the same amount returns the committed
    hold. Raises `HoldNotActiveError` when the hold was released or expired, or its
    `expires_at` has passed (the cleanup job will expire it; the credits were
    not guaranteed any more — debit with `consume` if the operation still ran).
    """
    check_key("operation_id", operation_id)
    consumed = micro("consumed_micro", consumed_micro, minimum=0)
    with conn.transaction():
        hold = _find(conn, account_id, operation_id, lock=True)
        if hold is None:
            raise UnknownHoldError(
                "operation_id", f"no hold for operation {operation_id!r} on account {account_id}"
            )
        if hold.status == "committed":
            if hold.consumed_micro != consumed:
                raise IdempotencyConflictError(
                    "consumed_micro",
                    f"hold {hold.id} was committed with {hold.consumed_micro}, not {consumed}",
                )
            return hold
        if hold.status != "held":
            raise HoldNotActiveError(
                "operation_id", f"hold {hold.id} of operation {operation_id!r} is {hold.status}"
            )
        if consumed > hold.amount_micro:
            raise InvalidInputError("consumed_micro", f"{consumed} exceeds the {hold.amount_micro} held")
        if conn.execute("SELECT %s <= now()", (hold.expires_at,)).fetchone()[0]:
            raise HoldNotActiveError(
                "operation_id", f"hold {hold.id} of operation {operation_id!r} expired at {hold.expires_at}"
            )
        # The account before the ledger entry: its foreign key takes a share lock on the
        # account row that two commits would otherwise both try to upgrade (deadlock).
        lock_account(conn, account_id)
        row = conn.execute(
            f"UPDATE credit_reservations SET status = 'committed', consumed_micro = %s, settled_at = now() "
            f"WHERE id = %s AND status = 'held' RETURNING {_COLUMNS}",
            (consumed, hold.id),
        ).fetchone()
        if consumed:
            conn.execute(
                "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key, reservation_id) "
                "VALUES (%s, 'hold_commit', %s, %s, %s)",
                (account_id, -consumed, f"hold:{hold.id}:commit", hold.id),
            )
        return _hold(row)


def release(conn: Conn, account_id: int, operation_id: str) -> Hold:
    """Free a held hold without consuming anything. A hold that is already
    settled (released, expired, committed) is returned unchanged."""
    check_key("operation_id", operation_id)
    with conn.transaction():
        hold = _find(conn, account_id, operation_id, lock=True)
        if hold is None:
            raise UnknownHoldError(
                "operation_id", f"no hold for operation {operation_id!r} on account {account_id}"
            )
        if hold.status != "held":
            return hold
        row = conn.execute(
            f"UPDATE credit_reservations SET status = 'released', settled_at = now() "
            f"WHERE id = %s AND status = 'held' RETURNING {_COLUMNS}",
            (hold.id,),
        ).fetchone()
        return _hold(row)


def get_hold(conn: Conn, account_id: int, operation_id: str) -> Hold | None:
    return _find(conn, account_id, operation_id, lock=False)


def _find(conn: Conn, account_id: Any, operation_id: str, *, lock: bool) -> Hold | None:
    if isinstance(account_id, bool) or not isinstance(account_id, int):
        raise InvalidInputError("account_id", f"must be an integer account id, got {account_id!r}")
    if lock:  # the held row first (a running cleanup chunk holds it: wait for it to finish)
        conn.execute(
            "SELECT 1 FROM credit_reservations_held h JOIN credit_reservations r ON r.id = h.reservation_id "
            "WHERE r.account_id = %s AND r.operation_id = %s FOR UPDATE OF h",
            (account_id, operation_id),
        )
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM credit_reservations WHERE account_id = %s AND operation_id = %s"
        + (" FOR UPDATE" if lock else ""),
        (account_id, operation_id),
    ).fetchone()
    return None if row is None else _hold(row)


def _no_hold(account_id: int, operation_id: str) -> str:
    return f"no hold for operation {operation_id!r} on account {account_id}"
