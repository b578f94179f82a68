-- 0004: operations — the durable record of every heavy task the worker runs.
--
-- An operation is identified by its operation id (given by the caller or derived from its
-- task and parameters): the idempotency key of its effect, of its credit hold and of its
-- progress stream. Whatever delivers it (a retry, a redelivered message, a relaunch from
-- the API), the row says what happened so far:
--   running    an attempt runs (attempts counts them) and holds a lease it renews while
--              it lives (lease_expires_at); a second delivery waits while the lease is
--              live and takes over (a new attempt) once it lapsed: the attempt died;
--   succeeded  result and charged_micro set; a later delivery returns the result, runs
--              nothing and charges nothing;
--   failed     error set, hold released; a relaunch starts a new attempt;
--   cancelled  stopped at a stage boundary on request, hold released.
-- Each attempt holds its own credits: credit_reservations(account_id, hold_operation_id),
-- the operation id itself for attempt 1 and `<operation id>#<attempt>` after it (reserving
-- is idempotent per (account, operation), so a new hold needs a key of its own). A taking-
-- over attempt releases its dead predecessor's hold if the cleanup has not expired it yet.
-- Charged once: the hold is committed in the same transaction that moves the row from
-- running to succeeded (the row locked first), so two attempts can never both commit.

CREATE TABLE operations (
    id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    task text NOT NULL CHECK (length(task) BETWEEN 1 AND 100),
    params jsonb NOT NULL,
    account_id bigint NOT NULL REFERENCES credit_accounts (id),
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    task_id text,
    hold_operation_id text,  -- NULL when the estimate is 0 (nothing held)
    estimated_micro bigint NOT NULL CHECK (estimated_micro >= 0),
    charged_micro bigint CHECK (charged_micro >= 0),
    stage text,
    result jsonb,
    error text,
    lease_expires_at timestamptz,  -- set while running: the attempt renews it while it lives
    cancel_requested_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CHECK ((status = 'succeeded') = (result IS NOT NULL AND charged_micro IS NOT NULL)),
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL))
);
COMMENT ON TABLE operations IS
    'Heavy operations run by the worker: one row per operation id (idempotency, attempts, charge, result).';
CREATE INDEX operations_by_account ON operations (account_id, created_at);
CREATE INDEX operations_running ON operations (updated_at) WHERE status = 'running';
