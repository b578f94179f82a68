"""CloudWatch Embedded Metric Format lines on stdout, for the worker.

On ECS with the awslogs driver CloudWatch Logs extracts them, so no IAM
permission is needed: `TaskProtected` per task and `ProtectionFailures` per
reason (names in `beatless.metrics`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from beatless import metrics


class EmfWriter:
    """Writes CloudWatch Embedded Metric Format lines (one JSON object per line)."""

    def __init__(
        self,
        namespace: str,
        stream: TextIO,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()

    def emit(self, name: str, value: float, dimensions: dict[str, str], **properties: Any) -> None:
        record: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [sorted(dimensions)],
                        "Metrics": [
                            {
                                "Name": name,
                                "Unit": "Count",
                                "StorageResolution": metrics.STORAGE_RESOLUTION_SECONDS,
                            }
                        ],
                    }
                ],
            },
            **properties,
            **dimensions,
            name: value,
        }
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def task_protected(self, task_id: str, protected: bool) -> None:
        self.emit(metrics.TASK_PROTECTED, 1 if protected else 0, {metrics.TASK_ID_DIMENSION: task_id})

    def protection_failure(self, reason: str, task_id: str, action: str, message: str) -> None:
        self.emit(
            metrics.PROTECTION_FAILURES,
            1,
            {metrics.REASON_DIMENSION: reason},
            TaskId=task_id,
            Action=action,
            Message=message[:300],
        )
