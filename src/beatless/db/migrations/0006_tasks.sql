-- 0006: tasks — every launch of an operation through the task API (or its CLI).
--
-- A task is one Celery message of one operation: its id is the Celery task id. The first
-- launch of an operation id is unique (launching the same operation id again returns that
-- task); a retry of a failed or revoked task is a new task of the same operation, at most
-- one per task (retrying the same task twice returns the same retry).
-- Revocation is recorded here, in the row a worker locks (FOR SHARE) before it starts an
-- attempt: the API locks it (FOR UPDATE) to revoke, so a revocation is either seen by the
-- starting worker or finds the operation's attempt running and asks it to stop.
-- sent_at: when its message was put on the queue (a launch whose message never left is sent
-- again by the next launch of its operation id, and only then). state/error/finished_at:
-- how its delivery ended, written by the worker (durable: Celery's stored states expire).

CREATE TABLE tasks (
    id text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    operation_id text NOT NULL CHECK (length(operation_id) BETWEEN 1 AND 200),
    task_type text NOT NULL CHECK (length(task_type) BETWEEN 1 AND 100),
    params jsonb NOT NULL,
    queue text NOT NULL,
    priority smallint NOT NULL CHECK (priority BETWEEN 1 AND 10),
    retry_of text REFERENCES tasks (id),
    revoked_at timestamptz,
    sent_at timestamptz,
    state text CHECK (state IN ('SUCCESS', 'FAILURE', 'REVOKED')),
    error text,
    finished_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((state IS NULL) = (finished_at IS NULL))
);
COMMENT ON TABLE tasks IS
    'Launches of operations through the task API: Celery task id, operation, parameters, retries, revocation.';
CREATE UNIQUE INDEX tasks_first_launch ON tasks (operation_id) WHERE retry_of IS NULL;
CREATE UNIQUE INDEX tasks_one_retry ON tasks (retry_of) WHERE retry_of IS NOT NULL;
CREATE INDEX tasks_by_operation ON tasks (operation_id, created_at DESC);
