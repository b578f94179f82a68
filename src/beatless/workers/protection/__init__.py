"""ECS task scale-in protection, set by a worker on itself (no Celery here:
`worker/protection.py` feeds the controller whether the worker holds a task).

- `agent`: the container agent's task protection endpoint (`AgentClient`) and
  the task id from the metadata endpoint;
- `controller`: when to protect, renew and release (`ProtectionController`);
- `emf`: the metric lines it writes (`EmfWriter`).
"""

from __future__ import annotations

from beatless.workers.protection.agent import STATE_PATH, AgentClient, AgentResult, task_id_from_metadata
from beatless.workers.protection.controller import ProtectionController, ProtectionPolicy, State
from beatless.workers.protection.emf import EmfWriter

__all__ = [
    "STATE_PATH",
    "AgentClient",
    "AgentResult",
    "EmfWriter",
    "ProtectionController",
    "ProtectionPolicy",
    "State",
    "task_id_from_metadata",
]
