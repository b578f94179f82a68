"""Balance changes: one append-only ledger entry each.

The database moves `credit_accounts.balance_micro` when an entry is inserted
(a trigger), so the balance always equals the sum of the entries. Each entry
has a UNIQUE `idempotency_key`, the natural key of the effect: posting the same
key again returns the entry that exists (`created=False`) and changes nothing;
the same key for a different effect raises `IdempotencyConflictError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beatless.credits.accounts import lock_account
from beatless.credits.errors import IdempotencyConflictError, InsufficientCreditsError
from beatless.credits.money import micro
from beatless.db.arguments import Conn
from beatless.errors import InvalidInputError

KINDS = ("allocation", "consumption", "hold_commit", "storage_charge", "transaction", "adjustment")
DEBIT_KINDS = ("consumption", "storage_charge")


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    account_id: int
    kind: str
    amount_micro: int  # signed: credits in > 0, credits out < 0
    idempotency_key: str
    created: bool  # False when the key had been posted before (a replay)


def check_key(field: str, value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise InvalidInputError(field, f"must be a string of 1-200 characters, got {value!r}")
    return value


def post(
    conn: Conn,
    account_id: int,
    kind: str,
    amount_micro: int,
    idempotency_key: str,
    *,
    description: str | None = None,
) -> LedgerEntry:
    """Insert one entry (signed amount) unless its key exists (then return that one).

    No balance check: `consume` and `allocate` lock the account and check first.
    Safe under concurrency: one of two racing posts of a key inserts, the other
    returns it.
    """
    postable = [k for k in KINDS if k != "hold_commit"]  # commits go through holds.commit
    if kind not in postable:
        raise InvalidInputError("kind", f"must be one of {', '.join(postable)}, got {kind!r}")
    if isinstance(amount_micro, bool) or not isinstance(amount_micro, int):
        raise InvalidInputError(
            "amount_micro", f"must be an integer number of micro-credits, got {amount_micro!r}"
        )
    wrong_sign = (
        amount_micro < 0
        if kind == "allocation"
        else amount_micro >= 0
        if kind in DEBIT_KINDS
        else amount_micro == 0
    )
    if wrong_sign:
        raise InvalidInputError("amount_micro", f"{amount_micro} has the wrong sign for a {kind} entry")
    check_key("idempotency_key", idempotency_key)
    # ON CONFLICT DO NOTHING waits for a concurrent insert of the same key, then
    # skips: the balance trigger sees only rows really inserted.
    row = conn.execute(
        "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key, description) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        (account_id, kind, amount_micro, idempotency_key, description),
    ).fetchone()
    if row is not None:
        return LedgerEntry(int(row[0]), account_id, kind, amount_micro, idempotency_key, True)
    existing = _by_key(conn, idempotency_key)
    assert existing is not None
    if existing.account_id != account_id or existing.kind != kind:
        raise IdempotencyConflictError(
            "idempotency_key",
            f"{idempotency_key!r} was posted as {existing.kind} on account {existing.account_id}",
        )
    return existing


def consume(
    conn: Conn,
    account_id: int,
    amount_micro: int,
    idempotency_key: str,
    *,
    kind: str = "consumption",
    allow_negative: bool = False,
    description: str | None = None,
) -> LedgerEntry:
    """Debit `amount_micro` (> 0) now, without a hold.

    Refused with `InsufficientCreditsError` (field `amount_micro`) when the available
    balance is short, unless `allow_negative` (storage is billed even then). A
    replay of the key returns the first entry; a replay with another amount raises.
    """
    amount = micro("amount_micro", amount_micro)
    if kind not in DEBIT_KINDS:
        raise InvalidInputError("kind", f"must be one of {', '.join(DEBIT_KINDS)}, got {kind!r}")
    check_key("idempotency_key", idempotency_key)
    with conn.transaction():
        account = lock_account(conn, account_id)
        existing = _by_key(conn, idempotency_key)
        if existing is not None:
            if (existing.account_id, existing.kind, existing.amount_micro) != (account_id, kind, -amount):
                raise IdempotencyConflictError(
                    "idempotency_key",
                    f"{idempotency_key!r} was posted as {existing.kind} of {existing.amount_micro} "
                    f"on account {existing.account_id}",
                )
            return existing
        if not allow_negative and account.available_micro < amount:
            raise InsufficientCreditsError(
                "amount_micro",
                f"{amount} exceeds the available balance of account {account_id} "
                f"({account.available_micro} = balance {account.balance_micro} - held {account.held_micro})",
            )
        return post(conn, account_id, kind, -amount, idempotency_key, description=description)


def allocate(
    conn: Conn,
    account_id: int,
    amount_micro: int,
    idempotency_key: str,
    *,
    cap_micro: int | None = None,
    description: str | None = None,
) -> LedgerEntry:
    """Credit `amount_micro` (>= 0), at most up to a balance of `cap_micro`.

    The entry's amount is what was granted: `min(amount, cap - balance)`, and 0
    when the balance already reached the cap (the entry still records that the
    allocation happened). A replay of the key returns the first entry unchanged.
    """
    amount = micro("amount_micro", amount_micro, minimum=0)
    cap = None if cap_micro is None else micro("cap_micro", cap_micro, minimum=0)
    check_key("idempotency_key", idempotency_key)
    with conn.transaction():
        account = lock_account(conn, account_id)
        existing = _by_key(conn, idempotency_key)
        if existing is not None:
            if (existing.account_id, existing.kind) != (account_id, "allocation"):
                raise IdempotencyConflictError(
                    "idempotency_key",
                    f"{idempotency_key!r} was posted as {existing.kind} on account {existing.account_id}",
                )
            return existing
        granted = amount if cap is None else max(0, min(amount, cap - account.balance_micro))
        return post(conn, account_id, "allocation", granted, idempotency_key, description=description)


def ledger_sum(conn: Conn, account_id: int) -> int:
    """The balance recomputed from the ledger."""
    row = conn.execute(
        "SELECT coalesce(sum(amount_micro), 0) FROM credit_ledger WHERE account_id = %s", (account_id,)
    ).fetchone()
    return int(row[0])


def _by_key(conn: Conn, key: str) -> LedgerEntry | None:
    row = conn.execute(
        "SELECT id, account_id, kind, amount_micro FROM credit_ledger WHERE idempotency_key = %s", (key,)
    ).fetchone()
    if row is None:
        return None
    return LedgerEntry(int(row[0]), int(row[1]), row[2], int(row[3]), key, False)
