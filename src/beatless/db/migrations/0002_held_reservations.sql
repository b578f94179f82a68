-- 0002: settling a hold rewrites its row in place (a HOT update) instead of writing
-- new index entries, and never touches the account row.
--
-- Why: in 0001 the access path of the cleanup was a partial index WHERE status = 'held'
-- and every account carried held_micro. Changing status (a column of an index
-- predicate) made every settle a non-HOT update — a new row version plus an entry in
-- each of the table's indexes — and each settle also rewrote its account row. Measured
-- on 5M holds / 1M due (bench/reservation_cleanup.py), a single UPDATE could not pass
-- ~70,000 settles/s and the chunked job half that.
--
-- Now:
--   credit_reservations_held  one row per hold in status 'held' (id, account, amount,
--                             expires_at), kept by the triggers of credit_reservations:
--                             a new held hold adds its row, a hold leaving 'held' deletes
--                             it (deletes write no index entries). Clients never write it.
--   credit_reservations       no index on status any more and fillfactor 80, so the
--                             status change is a HOT update on the same page.
--   held amount               computed, not stored: held = sum(amount_micro) of the
--                             account's rows in credit_reservations_held (indexed by
--                             account); available = balance_micro - held. The view
--                             credit_account_totals shows balance, held and available.
--                             credit_accounts.held_micro is dropped.
--
-- Invariants kept by the database after this migration:
--   credit_accounts.balance_micro = sum(credit_ledger.amount_micro) of the account
--   a reservation has a credit_reservations_held row  <=>  its status is 'held'
--     (same account, amount and expires_at; expires_at of a hold never changes)
--   a new hold never leaves balance_micro - held below 0 (accounts locked in id order
--     first, so concurrent inserts for one account are checked one after the other)
--   the ledger is append-only; a hold moves only held -> committed | released | expired
-- Locks (every writer follows this order, so none can deadlock another):
--   1. a held hold's row in credit_reservations_held — the hold's lock: the cleanup takes
--      it with FOR UPDATE SKIP LOCKED, commit/release take it (waiting) first;
--   2. its credit_reservations row;
--   3. account rows, FOR UPDATE, in ascending id, BEFORE inserting rows that reference
--      them (ledger entries, holds, allocations, charges): a foreign key check takes a
--      share lock on the account, and two transactions that both hold it and then both
--      need FOR UPDATE (the ledger trigger does) deadlock. The credit API does this;
--      bulk jobs lock their chunk's accounts first (SELECT ... ORDER BY id FOR UPDATE).
-- Settling a hold (cleanup, release) locks no account at all; a commit locks its one.
-- The held sum is read AFTER the account row lock, in a separate statement (READ
-- COMMITTED: it sees every hold committed before the lock was granted) — callers of the
-- credit API use READ COMMITTED.

DROP INDEX credit_reservations_held_by_expiry;  -- 0001's partial index on credit_reservations
ALTER TABLE credit_reservations SET (fillfactor = 80);  -- room on each page for HOT updates

CREATE TABLE credit_reservations_held (
    reservation_id bigint PRIMARY KEY REFERENCES credit_reservations (id),
    account_id bigint NOT NULL REFERENCES credit_accounts (id),
    amount_micro bigint NOT NULL CHECK (amount_micro > 0),
    expires_at timestamptz NOT NULL
);
COMMENT ON TABLE credit_reservations_held IS
    'The holds in status held (kept by triggers on credit_reservations; never written directly).';
-- The cleanup's access path, walked with keyset pagination on (expires_at, reservation_id).
CREATE INDEX credit_reservations_held_by_expiry ON credit_reservations_held (expires_at, reservation_id);
-- What an account holds: an index-only sum.
CREATE INDEX credit_reservations_held_by_account ON credit_reservations_held (account_id) INCLUDE (amount_micro);

INSERT INTO credit_reservations_held (reservation_id, account_id, amount_micro, expires_at)
SELECT id, account_id, amount_micro, expires_at FROM credit_reservations WHERE status = 'held';

-- Direct writes are refused: pg_trigger_depth() is 0 for a client's statement and >= 1
-- inside the triggers of credit_reservations (the WHEN clause costs no function call).
CREATE FUNCTION credit_reservations_held_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_reservations_held is kept by the triggers of credit_reservations (% refused)', TG_OP
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER credit_reservations_held_by_trigger_only
    BEFORE INSERT OR UPDATE OR DELETE ON credit_reservations_held FOR EACH ROW
    WHEN (pg_trigger_depth() = 0)
    EXECUTE FUNCTION credit_reservations_held_refuse();
CREATE TRIGGER credit_reservations_held_no_truncate
    BEFORE TRUNCATE ON credit_reservations_held FOR EACH STATEMENT
    EXECUTE FUNCTION credit_reservations_held_refuse();

-- New held holds: rows in credit_reservations_held; the available balance of every
-- account concerned must stay >= 0 (checked after locking those accounts in id order).
CREATE OR REPLACE FUNCTION credit_reservations_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    short record;
BEGIN
    PERFORM 1 FROM credit_accounts
    WHERE id IN (SELECT account_id FROM new_holds WHERE status = 'held')
    ORDER BY id FOR UPDATE;
    INSERT INTO credit_reservations_held (reservation_id, account_id, amount_micro, expires_at)
    SELECT id, account_id, amount_micro, expires_at FROM new_holds WHERE status = 'held';
    SELECT a.id, a.balance_micro, h.held INTO short
    FROM credit_accounts a
    CROSS JOIN LATERAL (SELECT coalesce(sum(amount_micro), 0) AS held FROM credit_reservations_held
                        WHERE account_id = a.id) h
    WHERE a.id IN (SELECT account_id FROM new_holds WHERE status = 'held')
      AND a.balance_micro - h.held < 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'credit_reservations: holds would drive the available balance of account % below 0 '
                        '(balance %, held %)', short.id, short.balance_micro, short.held
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

-- Holds leaving 'held' leave credit_reservations_held. Every updated row was 'held'
-- before (the transitions trigger refuses any other update), so the new rows say it all.
CREATE OR REPLACE FUNCTION credit_reservations_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM credit_reservations_held
    WHERE reservation_id = ANY (ARRAY(SELECT id FROM new_holds WHERE status <> 'held'));
    RETURN NULL;
END $$;

DROP TRIGGER credit_reservations_settle ON credit_reservations;
CREATE TRIGGER credit_reservations_settle
    AFTER UPDATE ON credit_reservations REFERENCING NEW TABLE AS new_holds
    FOR EACH STATEMENT EXECUTE FUNCTION credit_reservations_after_update();

-- expires_at of a hold is fixed at creation (credit_reservations_held keeps a copy).
DROP TRIGGER credit_reservations_transitions ON credit_reservations;
CREATE TRIGGER credit_reservations_transitions
    BEFORE UPDATE ON credit_reservations FOR EACH ROW
    WHEN (OLD.status <> 'held'
          OR NEW.account_id <> OLD.account_id
          OR NEW.operation_id <> OLD.operation_id
          OR NEW.amount_micro <> OLD.amount_micro
          OR NEW.created_at <> OLD.created_at
          OR NEW.expires_at <> OLD.expires_at)
    EXECUTE FUNCTION credit_reservations_refuse();

-- The held amount is computed now; the balance stays stored (moved by ledger inserts).
DROP TRIGGER credit_accounts_new_is_empty ON credit_accounts;
DROP TRIGGER credit_accounts_totals_by_trigger_only ON credit_accounts;
ALTER TABLE credit_accounts DROP COLUMN held_micro;

CREATE OR REPLACE FUNCTION credit_accounts_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        RAISE EXCEPTION 'credit_accounts: a new account starts with balance_micro = 0'
            USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'credit_accounts: balance_micro changes only through credit_ledger inserts (account %)',
                    OLD.id
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER credit_accounts_new_is_empty
    BEFORE INSERT ON credit_accounts FOR EACH ROW
    WHEN (NEW.balance_micro <> 0)
    EXECUTE FUNCTION credit_accounts_refuse();
CREATE TRIGGER credit_accounts_balance_by_ledger_only
    BEFORE UPDATE ON credit_accounts FOR EACH ROW
    WHEN (OLD.balance_micro <> NEW.balance_micro AND pg_trigger_depth() = 0)
    EXECUTE FUNCTION credit_accounts_refuse();

-- Balance, held and available per account (held and available computed).
CREATE VIEW credit_account_totals AS
SELECT a.id, a.graph_id, a.subscription_id, a.balance_micro,
       h.held AS held_micro,
       a.balance_micro - h.held AS available_micro
FROM credit_accounts a
CROSS JOIN LATERAL (SELECT coalesce(sum(amount_micro), 0)::bigint AS held FROM credit_reservations_held
                    WHERE account_id = a.id) h;
