"""The worker monitor's settings, read once from the environment.

Every error names the variable (`InvalidInput.field`), and is raised before
the monitor reads or publishes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from beatless.broker import TransportOptions, redact_url, validate_broker_url, validate_queue_names
from beatless.errors import InvalidInput
from beatless.metrics import DEFAULT_NAMESPACE
from beatless.settings import Env, env_float, env_int, env_list, env_str

MAX_SAMPLES = 60  # one reading a second for a minute is the finest that makes sense
DEFAULT_SAMPLES = 6
DEFAULT_SAMPLE_INTERVAL_SECONDS = 10.0

# The variables the monitor reads (the Lambda caches its settings per value of these).
ENVIRONMENT = (
    "BROKER_URL",
    "BROKER_PASSWORD_SECRET_ARN",
    "QUEUES",
    "BROKER_TRANSPORT_OPTIONS",
    "METRICS_NAMESPACE",
    "ECS_CLUSTER",
    "ECS_SERVICE",
    "SAMPLES",
    "SAMPLE_INTERVAL_SECONDS",
)


@dataclass(frozen=True)
class MonitorSettings:
    broker_url: str
    queues: tuple[str, ...]
    transport: TransportOptions = field(default_factory=TransportOptions)
    password_secret_arn: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    ecs_cluster: str | None = None
    ecs_service: str | None = None
    samples: int = DEFAULT_SAMPLES
    sample_interval_seconds: float = DEFAULT_SAMPLE_INTERVAL_SECONDS

    @property
    def ecs_configured(self) -> bool:
        return self.ecs_cluster is not None

    @property
    def redacted_broker_url(self) -> str:
        return redact_url(self.broker_url)

    def __repr__(self) -> str:
        # Keep a URL password out of any log or traceback that prints settings.
        return (
            f"MonitorSettings(broker_url={self.redacted_broker_url!r}, queues={self.queues!r}, "
            f"namespace={self.namespace!r}, ecs={self.ecs_cluster!r}/{self.ecs_service!r}, "
            f"samples={self.samples}, sample_interval_seconds={self.sample_interval_seconds})"
        )

    @classmethod
    def from_env(cls, env: Env) -> MonitorSettings:
        url = validate_broker_url(env_str(env, "BROKER_URL"))
        secret = env_str(env, "BROKER_PASSWORD_SECRET_ARN")
        if secret and urlsplit(url).password:
            raise InvalidInput(
                "BROKER_URL",
                "carries a password while BROKER_PASSWORD_SECRET_ARN is set; keep the password "
                "only in the secret",
            )
        queues = validate_queue_names(list(env_list(env, "QUEUES")), "QUEUES")
        transport = TransportOptions.from_json(env_str(env, "BROKER_TRANSPORT_OPTIONS"))
        cluster = env_str(env, "ECS_CLUSTER")
        service = env_str(env, "ECS_SERVICE")
        if (cluster is None) != (service is None):
            missing = "ECS_SERVICE" if service is None else "ECS_CLUSTER"
            raise InvalidInput(missing, "is required when the other of ECS_CLUSTER/ECS_SERVICE is set")
        return cls(
            broker_url=url,
            queues=queues,
            transport=transport,
            password_secret_arn=secret,
            namespace=env_str(env, "METRICS_NAMESPACE", DEFAULT_NAMESPACE) or DEFAULT_NAMESPACE,
            ecs_cluster=cluster,
            ecs_service=service,
            samples=env_int(env, "SAMPLES", DEFAULT_SAMPLES, minimum=1, maximum=MAX_SAMPLES),
            sample_interval_seconds=env_float(
                env, "SAMPLE_INTERVAL_SECONDS", DEFAULT_SAMPLE_INTERVAL_SECONDS, minimum=1, maximum=60
            ),
        )
