"""The worker monitor's own settings, read once from the environment.

Where the broker is and which queues to read are the broker's settings
(`beatless.queues.connection.BrokerSettings`, the environment of `Need.BROKER`).
Every error names the variable (`InvalidInputError.field`), and is raised
before the monitor reads or publishes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from beatless.errors import InvalidInputError
from beatless.metrics import DEFAULT_NAMESPACE
from beatless.settings import Env, env_float, env_int, env_str

MAX_SAMPLES = 60  # one reading a second for a minute is the finest that makes sense
DEFAULT_SAMPLES = 6
DEFAULT_SAMPLE_INTERVAL_SECONDS = 10.0
# The variables `MonitorSettings` reads (the broker's are `BROKER_ENVIRONMENT`).
ENVIRONMENT = (
    "METRICS_NAMESPACE", "ECS_CLUSTER", "ECS_SERVICE", "SAMPLES", "SAMPLE_INTERVAL_SECONDS", "IDLE_SAMPLES"
)  # fmt: skip


@dataclass(frozen=True)
class MonitorSettings:
    namespace: str = DEFAULT_NAMESPACE
    ecs_cluster: str | None = None
    ecs_service: str | None = None
    samples: int = DEFAULT_SAMPLES
    sample_interval_seconds: float = DEFAULT_SAMPLE_INTERVAL_SECONDS
    # Readings when the first one finds the service idle (None: SAMPLES); see `beatless.queues.wake`.
    idle_samples: int | None = None

    @property
    def ecs_configured(self) -> bool:
        return self.ecs_cluster is not None

    @classmethod
    def from_env(cls, env: Env) -> MonitorSettings:
        """`METRICS_NAMESPACE` (default Beatless/Workers), `ECS_CLUSTER` + `ECS_SERVICE`
        (both or neither), `SAMPLES` (1-60, default 6), `SAMPLE_INTERVAL_SECONDS` (1-60,
        default 10), `IDLE_SAMPLES` (1 to SAMPLES; default SAMPLES: readings when the first
        finds no task and no worker — only with ECS_CLUSTER, which shows the workers)."""
        cluster = env_str(env, "ECS_CLUSTER")
        service = env_str(env, "ECS_SERVICE")
        if (cluster is None) != (service is None):
            missing = "ECS_SERVICE" if service is None else "ECS_CLUSTER"
            raise InvalidInputError(missing, "is required when the other of ECS_CLUSTER/ECS_SERVICE is set")
        samples = env_int(env, "SAMPLES", DEFAULT_SAMPLES, minimum=1, maximum=MAX_SAMPLES)
        # Without ECS the monitor cannot see the workers, never finds the service idle, and
        # takes SAMPLES every run.
        idle_samples = env_int(env, "IDLE_SAMPLES", 0, minimum=1, maximum=samples) or None
        return cls(
            namespace=env_str(env, "METRICS_NAMESPACE", DEFAULT_NAMESPACE) or DEFAULT_NAMESPACE,
            ecs_cluster=cluster,
            ecs_service=service,
            samples=samples,
            idle_samples=idle_samples,
            sample_interval_seconds=env_float(
                env, "SAMPLE_INTERVAL_SECONDS", DEFAULT_SAMPLE_INTERVAL_SECONDS, minimum=1, maximum=60
            ),
        )
