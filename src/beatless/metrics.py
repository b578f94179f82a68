"""Names of the worker metrics: the monitor publishes with these and the
alarms, scaling policies and dashboard are built from these. A test checks
that the two sides match."""

from __future__ import annotations

DEFAULT_NAMESPACE = "Beatless/Workers"

# Per queue (dimension QUEUE_DIMENSION)
PENDING_TASKS = "PendingTasks"  # messages waiting in the queue's priority lists
RESERVED_TASKS = "ReservedTasks"  # delivered to a worker, not yet acknowledged
BACKLOG_PER_TASK = "BacklogPerTask"  # pending / max(running worker tasks, 1)
QUEUE_DIMENSION = "Queue"

# Per monitored worker service (no dimension; one service per namespace)
RUNNING_TASKS = "RunningTasks"  # ECS tasks running in the worker service
DESIRED_TASKS = "DesiredTasks"  # the service's desired count
MONITOR_HEARTBEAT = "MonitorHeartbeat"  # 1 per successful reading
MONITOR_ERRORS = "MonitorErrors"  # 1 per failed reading (Redis or ECS unreadable)

# Emitted by each worker task (EMF log lines, no IAM needed), dimension TASK_ID_DIMENSION:
TASK_PROTECTED = "TaskProtected"  # 1 while the task holds ECS scale-in protection, else 0
TASK_ID_DIMENSION = "TaskId"
# Emitted by each worker, dimension REASON_DIMENSION (DEPLOYMENT_BLOCKED, AccessDenied, Timeout, ...)
PROTECTION_FAILURES = "ProtectionFailures"
REASON_DIMENSION = "Reason"

# Scheduled jobs (every bin/lambda job), namespace JOBS_NAMESPACE, dimension JOB_DIMENSION:
JOBS_NAMESPACE = "Beatless/Jobs"
JOB_DIMENSION = "Job"
JOB_SUCCEEDED = "JobSucceeded"  # 1 per run that finished without raising
JOB_OVERDUE = "JobOverdue"  # published by job_watchdog: 1 when no success within 1.5 x the period

# High resolution: stored at 1 s so alarms can use 10 s periods.
STORAGE_RESOLUTION_SECONDS = 1
