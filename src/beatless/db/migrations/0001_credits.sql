-- 0001: users, graphs and tiers; shared-repository subscriptions; credit accounts,
-- the append-only ledger and credit holds; API keys and sessions; the exactly-once
-- tables of the scheduled jobs; pending transactions of the old credit system.
--
-- Money: every amount is a BIGINT of micro-credits (1 credit = 1,000,000 micro-credits),
-- columns end in _micro. Integers are exact, sum exactly and leave 9.2e12 credits of
-- head room; AI-token prices (3 credits per 1K tokens = 3,000 micro-credits per token)
-- are whole numbers at this scale. Never floats.
--
-- Invariants kept BY THE DATABASE (statement-level triggers, so every statement of any
-- client keeps them, bulk inserts included):
--   credit_accounts.balance_micro = sum(credit_ledger.amount_micro) of the account
--   credit_accounts.held_micro    = sum(amount_micro) of the account's holds in status 'held'
--   a new hold never leaves balance_micro - held_micro (the AVAILABLE balance) below 0
--   the ledger is append-only; a hold moves only held -> committed | released | expired
-- Lock order: a transaction that locks several credit_accounts rows locks them in
-- ascending id (the triggers do), and locks a hold before its account; so concurrent
-- jobs and API calls cannot deadlock one another.

-- ---------------------------------------------------------------------------
-- Tiers and plans (data; change them with a migration)
-- ---------------------------------------------------------------------------

CREATE TABLE tiers (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    monthly_allocation_micro bigint NOT NULL CHECK (monthly_allocation_micro >= 0),
    -- the monthly allocation never lifts a balance above this
    balance_cap_micro bigint NOT NULL CHECK (balance_cap_micro >= monthly_allocation_micro),
    included_storage_bytes bigint NOT NULL CHECK (included_storage_bytes >= 0),
    -- overage price per GiB (2^30 bytes) stored for one day above the included storage
    storage_micro_per_gib_day bigint NOT NULL CHECK (storage_micro_per_gib_day >= 0)
);
COMMENT ON TABLE tiers IS 'Graph tiers: monthly credits, balance cap, included storage, storage overage rate.';

INSERT INTO tiers (name, monthly_allocation_micro, balance_cap_micro, included_storage_bytes,
                   storage_micro_per_gib_day) VALUES
    ('standard', 8000000000, 16000000000, 107374182400, 1000000),     -- 8,000 cr, cap 16,000, 100 GiB
    ('large', 32000000000, 64000000000, 536870912000, 1000000),       -- 32,000 cr, cap 64,000, 500 GiB
    ('xlarge', 100000000000, 200000000000, 2199023255552, 1000000);   -- 100,000 cr, cap 200,000, 2 TiB

CREATE TABLE subscription_plans (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    monthly_allocation_micro bigint NOT NULL CHECK (monthly_allocation_micro >= 0),
    balance_cap_micro bigint NOT NULL CHECK (balance_cap_micro >= monthly_allocation_micro)
);
COMMENT ON TABLE subscription_plans IS 'Plans of shared-repository subscriptions: monthly credits and balance cap.';

INSERT INTO subscription_plans (name, monthly_allocation_micro, balance_cap_micro) VALUES
    ('starter', 5000000000, 10000000000),       -- 5,000 cr, cap 10,000
    ('advanced', 25000000000, 50000000000);     -- 25,000 cr, cap 50,000

-- ---------------------------------------------------------------------------
-- Users, graphs, tier history, shared repositories
-- ---------------------------------------------------------------------------

CREATE TABLE users (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE graphs (
    id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    owner_id text NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CHECK (deleted_at IS NULL OR deleted_at >= created_at)
);
CREATE INDEX graphs_owner ON graphs (owner_id);

-- A graph's tier is a history: the tier in force at time T is the row with the latest
-- effective_from <= T (graph_tier_at). Mid-month tier changes are rows, never updates.
CREATE TABLE graph_tier_history (
    graph_id text NOT NULL REFERENCES graphs (id),
    effective_from timestamptz NOT NULL,
    tier text NOT NULL REFERENCES tiers (name),
    PRIMARY KEY (graph_id, effective_from)
);

CREATE FUNCTION graph_tier_at(p_graph_id text, p_at timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT tier FROM graph_tier_history
    WHERE graph_id = p_graph_id AND effective_from <= p_at
    ORDER BY effective_from DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION graph_tier_at IS 'The tier of a graph at a time, NULL before its first tier.';

-- Each tier interval [effective_from, effective_to); effective_to NULL = still in force.
CREATE VIEW graph_tier_periods AS
SELECT graph_id, tier, effective_from,
       lead(effective_from) OVER (PARTITION BY graph_id ORDER BY effective_from) AS effective_to
FROM graph_tier_history;

CREATE TABLE shared_repositories (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    description text NOT NULL
);
INSERT INTO shared_repositories (name, description) VALUES
    ('sec', 'Public SEC filings (XBRL financial statements), read by many users');

-- One subscription per user and repository; ended_at closes it (set it back to NULL
-- to resubscribe: the credit account, and its balance, belong to the subscription).
CREATE TABLE repository_subscriptions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id),
    repository text NOT NULL REFERENCES shared_repositories (name),
    plan text NOT NULL REFERENCES subscription_plans (name),
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    UNIQUE (user_id, repository),
    CHECK (ended_at IS NULL OR ended_at > started_at)
);

-- ---------------------------------------------------------------------------
-- Credit accounts
-- ---------------------------------------------------------------------------

-- Exactly one of graph_id / subscription_id. balance_micro and held_micro are kept by
-- the triggers below (ledger inserts and hold transitions); a direct UPDATE of either
-- is refused. available = balance_micro - held_micro. The balance may be negative
-- (storage is billed even when credits ran out); held_micro never is.
CREATE TABLE credit_accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    graph_id text UNIQUE REFERENCES graphs (id),
    subscription_id bigint UNIQUE REFERENCES repository_subscriptions (id),
    balance_micro bigint NOT NULL DEFAULT 0,
    held_micro bigint NOT NULL DEFAULT 0 CHECK (held_micro >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(graph_id, subscription_id) = 1)
);

CREATE FUNCTION credit_accounts_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        RAISE EXCEPTION 'credit_accounts: a new account starts with balance_micro = 0 and held_micro = 0'
            USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'credit_accounts: balance_micro and held_micro change only through credit_ledger '
                    'inserts and credit_reservations transitions (account %)', OLD.id
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER credit_accounts_new_is_empty
    BEFORE INSERT ON credit_accounts FOR EACH ROW
    WHEN (NEW.balance_micro <> 0 OR NEW.held_micro <> 0)
    EXECUTE FUNCTION credit_accounts_refuse();

-- pg_trigger_depth() is 0 for a client's statement and >= 1 inside the triggers below,
-- so this refuses direct changes and never runs (no function call) on the legal path.
CREATE TRIGGER credit_accounts_totals_by_trigger_only
    BEFORE UPDATE ON credit_accounts FOR EACH ROW
    WHEN ((OLD.balance_micro <> NEW.balance_micro OR OLD.held_micro <> NEW.held_micro)
          AND pg_trigger_depth() = 0)
    EXECUTE FUNCTION credit_accounts_refuse();

-- ---------------------------------------------------------------------------
-- Credit holds (reservations)
-- ---------------------------------------------------------------------------

-- A hold lowers the available balance until it is committed (consumed_micro <= amount
-- is debited through the ledger, the rest freed), released by its owner, or expired by
-- credit_reservation_cleanup once expires_at has passed. Holds are NOT ledger entries:
-- they never change the balance, only what is available; their history is this table
-- (created_at, settled_at, status), and held_micro on the account is their sum.
CREATE TABLE credit_reservations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES credit_accounts (id),
    operation_id text NOT NULL CHECK (length(operation_id) BETWEEN 1 AND 200),
    amount_micro bigint NOT NULL CHECK (amount_micro > 0),
    status text NOT NULL DEFAULT 'held'
        CHECK (status IN ('held', 'committed', 'released', 'expired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    settled_at timestamptz,
    consumed_micro bigint CHECK (consumed_micro >= 0 AND consumed_micro <= amount_micro),
    UNIQUE (account_id, operation_id),  -- reserving twice for one operation is one hold
    CHECK (expires_at > created_at),
    CHECK ((status = 'held') = (settled_at IS NULL)),
    CHECK ((status = 'committed') = (consumed_micro IS NOT NULL))
);
-- The cleanup's access path: held holds by expiry, walked with keyset pagination on
-- (expires_at, id). Partial, so settled holds (the vast majority) are not in it.
CREATE INDEX credit_reservations_held_by_expiry ON credit_reservations (expires_at, id)
    WHERE status = 'held';

CREATE FUNCTION credit_reservations_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'credit_reservations: hold % is still held and cannot be deleted', OLD.id
            USING ERRCODE = 'check_violation';
    ELSIF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'credit_reservations cannot be truncated (held_micro of the accounts would be wrong)'
            USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'credit_reservations: hold % cannot go from % to % (only held -> committed, released '
                    'or expired; account, operation, amount and creation time never change)',
                    OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER credit_reservations_transitions
    BEFORE UPDATE ON credit_reservations FOR EACH ROW
    WHEN (OLD.status <> 'held'
          OR NEW.account_id <> OLD.account_id
          OR NEW.operation_id <> OLD.operation_id
          OR NEW.amount_micro <> OLD.amount_micro
          OR NEW.created_at <> OLD.created_at)
    EXECUTE FUNCTION credit_reservations_refuse();

CREATE TRIGGER credit_reservations_keep_held
    BEFORE DELETE ON credit_reservations FOR EACH ROW
    WHEN (OLD.status = 'held')
    EXECUTE FUNCTION credit_reservations_refuse();

CREATE TRIGGER credit_reservations_no_truncate
    BEFORE TRUNCATE ON credit_reservations FOR EACH STATEMENT
    EXECUTE FUNCTION credit_reservations_refuse();

-- New holds add to held_micro; the resulting available balance must not be negative.
CREATE FUNCTION credit_reservations_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    short record;
BEGIN
    PERFORM 1 FROM credit_accounts
    WHERE id IN (SELECT account_id FROM new_holds WHERE status = 'held')
    ORDER BY id FOR UPDATE;
    UPDATE credit_accounts a
    SET held_micro = a.held_micro + d.amount
    FROM (SELECT account_id, sum(amount_micro) AS amount FROM new_holds
          WHERE status = 'held' GROUP BY account_id) d
    WHERE a.id = d.account_id;
    SELECT a.id, a.balance_micro, a.held_micro INTO short
    FROM credit_accounts a
    WHERE a.id IN (SELECT account_id FROM new_holds WHERE status = 'held')
      AND a.balance_micro - a.held_micro < 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'credit_reservations: holds would drive the available balance of account % below 0 '
                        '(balance %, held %)', short.id, short.balance_micro, short.held_micro
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER credit_reservations_hold
    AFTER INSERT ON credit_reservations REFERENCING NEW TABLE AS new_holds
    FOR EACH STATEMENT EXECUTE FUNCTION credit_reservations_after_insert();

-- Holds leaving 'held' (committed, released, expired) give their amount back.
CREATE FUNCTION credit_reservations_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM credit_accounts
    WHERE id IN (SELECT o.account_id FROM old_holds o JOIN new_holds n ON n.id = o.id
                 WHERE o.status = 'held' AND n.status <> 'held')
    ORDER BY id FOR UPDATE;
    UPDATE credit_accounts a
    SET held_micro = a.held_micro - d.amount
    FROM (SELECT o.account_id, sum(o.amount_micro) AS amount
          FROM old_holds o JOIN new_holds n ON n.id = o.id
          WHERE o.status = 'held' AND n.status <> 'held'
          GROUP BY o.account_id) d
    WHERE a.id = d.account_id;
    RETURN NULL;
END $$;

CREATE TRIGGER credit_reservations_settle
    AFTER UPDATE ON credit_reservations REFERENCING OLD TABLE AS old_holds NEW TABLE AS new_holds
    FOR EACH STATEMENT EXECUTE FUNCTION credit_reservations_after_update();

-- ---------------------------------------------------------------------------
-- The append-only credit ledger
-- ---------------------------------------------------------------------------

-- Every change of a balance is one row here; the balance is the sum of the rows.
-- idempotency_key is the natural key of the effect (for example
-- 'allocation:graph:<account>:2026-11' or 'hold:<id>:commit'); inserting it twice is
-- refused, so a replayed effect is detected in the same transaction that would repeat it.
CREATE TABLE credit_ledger (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES credit_accounts (id),
    kind text NOT NULL CHECK (kind IN (
        'allocation', 'consumption', 'hold_commit', 'storage_charge', 'transaction', 'adjustment')),
    amount_micro bigint NOT NULL,
    idempotency_key text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    reservation_id bigint UNIQUE REFERENCES credit_reservations (id),
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- credits in: allocations (0 when the balance already reached the cap, which still
    -- records that the allocation happened); credits out: consumption, committed holds,
    -- storage; either sign: settled pending transactions, manual adjustments.
    CHECK (CASE kind
        WHEN 'allocation' THEN amount_micro >= 0
        WHEN 'consumption' THEN amount_micro < 0
        WHEN 'hold_commit' THEN amount_micro < 0 AND reservation_id IS NOT NULL
        WHEN 'storage_charge' THEN amount_micro < 0
        ELSE amount_micro <> 0 END),
    CHECK ((kind = 'hold_commit') = (reservation_id IS NOT NULL))
);
CREATE INDEX credit_ledger_account ON credit_ledger (account_id, id);

CREATE FUNCTION credit_ledger_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_ledger is append-only (% refused); correct a mistake with an adjustment entry', TG_OP
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER credit_ledger_append_only
    BEFORE UPDATE OR DELETE ON credit_ledger FOR EACH ROW EXECUTE FUNCTION credit_ledger_refuse();
CREATE TRIGGER credit_ledger_no_truncate
    BEFORE TRUNCATE ON credit_ledger FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger_refuse();

-- Inserted entries move the balances (AFTER ... FOR EACH STATEMENT: it sees only rows
-- really inserted, so INSERT ... ON CONFLICT DO NOTHING on the idempotency key is safe).
CREATE FUNCTION credit_ledger_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM credit_accounts WHERE id IN (SELECT account_id FROM new_entries)
    ORDER BY id FOR UPDATE;
    UPDATE credit_accounts a
    SET balance_micro = a.balance_micro + d.amount
    FROM (SELECT account_id, sum(amount_micro) AS amount FROM new_entries GROUP BY account_id) d
    WHERE a.id = d.account_id;
    RETURN NULL;
END $$;

CREATE TRIGGER credit_ledger_apply
    AFTER INSERT ON credit_ledger REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION credit_ledger_after_insert();

-- ---------------------------------------------------------------------------
-- Exactly-once tables of the scheduled jobs (UNIQUE = one effect per subject and period)
-- ---------------------------------------------------------------------------

-- storage_usage_collector: one snapshot per graph and hour (hour = the hour's start, UTC).
CREATE TABLE storage_usage_snapshots (
    graph_id text NOT NULL REFERENCES graphs (id),
    hour timestamptz NOT NULL CHECK (hour = date_trunc('hour', hour, 'UTC')),
    s3_files_bytes bigint NOT NULL DEFAULT 0 CHECK (s3_files_bytes >= 0),
    s3_tables_bytes bigint NOT NULL DEFAULT 0 CHECK (s3_tables_bytes >= 0),
    graph_bytes bigint NOT NULL DEFAULT 0 CHECK (graph_bytes >= 0),
    subgraph_bytes bigint NOT NULL DEFAULT 0 CHECK (subgraph_bytes >= 0),
    total_bytes bigint GENERATED ALWAYS AS (s3_files_bytes + s3_tables_bytes + graph_bytes + subgraph_bytes) STORED,
    collected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (graph_id, hour)
);
CREATE INDEX storage_usage_snapshots_hour ON storage_usage_snapshots (hour);

-- storage_billing: one charge per graph and UTC day, written in the same transaction as
-- its ledger entry (ledger_id NULL when nothing was above the included storage).
CREATE TABLE storage_charges (
    graph_id text NOT NULL REFERENCES graphs (id),
    day date NOT NULL,
    account_id bigint NOT NULL REFERENCES credit_accounts (id),
    tier text NOT NULL REFERENCES tiers (name),
    snapshots integer NOT NULL CHECK (snapshots BETWEEN 0 AND 24),
    average_bytes bigint NOT NULL CHECK (average_bytes >= 0),
    included_bytes bigint NOT NULL CHECK (included_bytes >= 0),
    amount_micro bigint NOT NULL CHECK (amount_micro >= 0),
    ledger_id bigint UNIQUE REFERENCES credit_ledger (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (graph_id, day),
    CHECK ((amount_micro > 0) = (ledger_id IS NOT NULL))
);
CREATE INDEX storage_charges_day ON storage_charges (day);

-- shared_credit_allocation / graph_credit_allocation: one allocation per account and
-- month (month = its first day). granted_micro may be below requested_micro (cap).
CREATE TABLE monthly_allocations (
    account_id bigint NOT NULL REFERENCES credit_accounts (id),
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    tier_or_plan text NOT NULL,
    requested_micro bigint NOT NULL CHECK (requested_micro >= 0),
    granted_micro bigint NOT NULL CHECK (granted_micro >= 0 AND granted_micro <= requested_micro),
    ledger_id bigint NOT NULL UNIQUE REFERENCES credit_ledger (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, month)
);
CREATE INDEX monthly_allocations_month ON monthly_allocations (month);

-- monthly_usage_summary: one summary per graph and month.
CREATE TABLE monthly_usage_summaries (
    graph_id text NOT NULL REFERENCES graphs (id),
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    tier_at_end text REFERENCES tiers (name),
    allocated_micro bigint NOT NULL DEFAULT 0 CHECK (allocated_micro >= 0),
    consumed_micro bigint NOT NULL DEFAULT 0 CHECK (consumed_micro >= 0),
    storage_charged_micro bigint NOT NULL DEFAULT 0 CHECK (storage_charged_micro >= 0),
    average_storage_bytes bigint NOT NULL DEFAULT 0 CHECK (average_storage_bytes >= 0),
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (graph_id, month)
);

-- ---------------------------------------------------------------------------
-- Pending transactions (the old Django credit system)
-- ---------------------------------------------------------------------------

-- What pending_transaction_processor does with a transaction still pending after the
-- threshold: 'finalize' (the service was delivered: post it to the ledger) or 'revert'
-- (never confirmed: drop it without touching the balance).
CREATE TABLE transaction_kinds (
    kind text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]{0,31}$'),
    direction smallint NOT NULL CHECK (direction IN (-1, 1)),  -- -1 debit, +1 credit
    when_stale text NOT NULL CHECK (when_stale IN ('finalize', 'revert'))
);
INSERT INTO transaction_kinds (kind, direction, when_stale) VALUES
    ('ai_usage', -1, 'finalize'),        -- tokens were spent: charge them
    ('storage_overage', -1, 'finalize'), -- storage was used: charge it
    ('purchase', 1, 'revert'),           -- payment never confirmed: no credits
    ('refund', 1, 'revert');             -- refund never approved: nothing happens

-- A pending transaction has NOT touched the balance. Finalizing posts one ledger entry
-- (kind 'transaction', key 'transaction:<id>') in the same transaction that sets
-- status; reverting only sets status. amount_micro carries the sign of its kind.
CREATE TABLE credit_transactions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES credit_accounts (id),
    kind text NOT NULL REFERENCES transaction_kinds (kind),
    amount_micro bigint NOT NULL CHECK (amount_micro <> 0),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'finalized', 'reverted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz,
    ledger_id bigint UNIQUE REFERENCES credit_ledger (id),
    description text,
    CHECK ((status = 'pending') = (settled_at IS NULL)),
    CHECK ((status = 'finalized') = (ledger_id IS NOT NULL))
);
CREATE INDEX credit_transactions_pending ON credit_transactions (created_at, id) WHERE status = 'pending';

CREATE FUNCTION credit_transactions_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit_transactions: transaction % cannot go from % to % (only pending -> finalized or '
                    'reverted; account, kind and amount never change)', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER credit_transactions_transitions
    BEFORE UPDATE ON credit_transactions FOR EACH ROW
    WHEN (OLD.status <> 'pending'
          OR NEW.account_id <> OLD.account_id
          OR NEW.kind <> OLD.kind
          OR NEW.amount_micro <> OLD.amount_micro)
    EXECUTE FUNCTION credit_transactions_refuse();

-- ---------------------------------------------------------------------------
-- API keys and sessions
-- ---------------------------------------------------------------------------

-- The key itself is never stored: digest = SHA-256 of the whole key, prefix = its
-- public, non-secret start (shown in lists, used to find the row; the digest is then
-- compared in constant time). deactivated_at is set by auth_cleanup.
CREATE TABLE api_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix text NOT NULL UNIQUE CHECK (prefix ~ '^bl_[a-z2-7]{8}$'),
    digest bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    deactivated_at timestamptz,
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX api_keys_user ON api_keys (user_id);
-- auth_cleanup's access paths: keys that expired or were revoked and are still active.
CREATE INDEX api_keys_active_expiry ON api_keys (expires_at) WHERE deactivated_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX api_keys_active_revoked ON api_keys (revoked_at) WHERE deactivated_at IS NULL AND revoked_at IS NOT NULL;

CREATE TABLE user_sessions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id),
    token_digest bytea NOT NULL UNIQUE CHECK (length(token_digest) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX user_sessions_expiry ON user_sessions (expires_at);
