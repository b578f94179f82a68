"""The graph node's settings, read once from the environment (`beatless graph-node`).

- `GRAPH_DATA_DIR` (required): absolute directory, one folder per graph database;
- `GRAPH_NODE_HOST`, `GRAPH_NODE_PORT` (`127.0.0.1`, 8700): where the API listens;
- `GRAPH_NODE_ENDPOINT` (`http://<host>:<port>`): what the registry advertises (the
  instance's private address in AWS);
- `GRAPH_NODE_CAPACITY` (50): databases this node may host;
- `GRAPH_API_KEY_SECRET_ARN` or `GRAPH_API_KEY` (exactly one): a Secrets Manager secret
  whose `SecretString` is the API key (AWS), or the key itself (local runs);
- `INSTANCE_ID` (the host name): its id in the instance registry (the EC2 instance id);
- `GRAPH_ASG_NAME`: its Auto Scaling group;
- `INSTANCE_REGISTRY_TABLE`, `GRAPH_REGISTRY_TABLE` (both or neither): where it
  registers, heartbeats and records graph sizes;
- `GRAPH_BUFFER_POOL_MB` (256): the buffer pool of EACH open database (the engine's
  default is ~80 % of RAM per database);
- `GRAPH_MAX_DB_SIZE_MB` (65,536; a power of 2): each database's hard size cap — address space only;
  a load that could pass it is refused before it starts;
- `GRAPH_MAX_OPEN_DATABASES` (16): open databases kept, least recently used closed first;
- `GRAPH_THREADS` (2): engine threads per query or load;
- `GRAPH_QUERY_ROW_LIMIT`, `GRAPH_QUERY_TIMEOUT_MS` (10,000, 30,000): the most a query
  may return and run (a request may ask for less);
- `GRAPH_HEARTBEAT_SECONDS` (30): heartbeats and size reports.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from beatless.errors import InvalidInputError
from beatless.settings import Env, env_int, env_str

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class NodeSettings:
    data_dir: Path
    host: str
    port: int
    endpoint: str
    capacity: int
    instance_id: str
    api_key: str | None = field(default=None, repr=False)
    api_key_secret_arn: str | None = None
    asg_name: str | None = None
    instance_table: str | None = None
    graph_table: str | None = None
    buffer_pool_bytes: int = 256 * MIB
    max_db_size_bytes: int = 64 * GIB
    max_open_databases: int = 16
    threads: int = 2
    query_row_limit: int = 10_000
    query_timeout_ms: int = 30_000
    heartbeat_seconds: int = 30

    @property
    def registered(self) -> bool:
        return self.instance_table is not None

    @classmethod
    def from_env(cls, env: Env) -> NodeSettings:
        data_dir = env_str(env, "GRAPH_DATA_DIR", required=True)
        assert data_dir is not None
        if not Path(data_dir).is_absolute():
            raise InvalidInputError("GRAPH_DATA_DIR", f"must be an absolute path, got {data_dir!r}")
        host = env_str(env, "GRAPH_NODE_HOST", "127.0.0.1") or "127.0.0.1"
        port = env_int(env, "GRAPH_NODE_PORT", 8700, minimum=1, maximum=65535)
        endpoint = env_str(env, "GRAPH_NODE_ENDPOINT") or f"http://{host}:{port}"
        if not endpoint.startswith(("http://", "https://")):
            raise InvalidInputError("GRAPH_NODE_ENDPOINT", f"must be http(s)://host:port, got {endpoint!r}")
        key = env_str(env, "GRAPH_API_KEY")
        secret = env_str(env, "GRAPH_API_KEY_SECRET_ARN")
        if (key is None) == (secret is None):
            raise InvalidInputError("GRAPH_API_KEY_SECRET_ARN", "set exactly one of it and GRAPH_API_KEY")
        if key is not None and len(key) < 16:
            raise InvalidInputError("GRAPH_API_KEY", "must be at least 16 characters")
        instance_table = env_str(env, "INSTANCE_REGISTRY_TABLE")
        graph_table = env_str(env, "GRAPH_REGISTRY_TABLE")
        if (instance_table is None) != (graph_table is None):
            missing = "GRAPH_REGISTRY_TABLE" if graph_table is None else "INSTANCE_REGISTRY_TABLE"
            raise InvalidInputError(missing, "is required with the other registry table")
        max_db_mb = env_int(env, "GRAPH_MAX_DB_SIZE_MB", 65_536, minimum=16, maximum=2**24)
        if max_db_mb & (max_db_mb - 1):
            raise InvalidInputError(
                "GRAPH_MAX_DB_SIZE_MB", f"must be a power of 2 (the engine's rule), got {max_db_mb}"
            )
        return cls(
            data_dir=Path(data_dir),
            host=host,
            port=port,
            endpoint=endpoint.rstrip("/"),
            capacity=env_int(env, "GRAPH_NODE_CAPACITY", 50, minimum=1, maximum=10_000),
            instance_id=env_str(env, "INSTANCE_ID") or socket.gethostname(),
            api_key=key,
            api_key_secret_arn=secret,
            asg_name=env_str(env, "GRAPH_ASG_NAME"),
            instance_table=instance_table,
            graph_table=graph_table,
            buffer_pool_bytes=env_int(env, "GRAPH_BUFFER_POOL_MB", 256, minimum=16, maximum=1_048_576) * MIB,
            max_db_size_bytes=max_db_mb * MIB,
            max_open_databases=env_int(env, "GRAPH_MAX_OPEN_DATABASES", 16, minimum=1, maximum=10_000),
            threads=env_int(env, "GRAPH_THREADS", 2, minimum=1, maximum=256),
            query_row_limit=env_int(env, "GRAPH_QUERY_ROW_LIMIT", 10_000, minimum=1, maximum=10_000_000),
            query_timeout_ms=env_int(env, "GRAPH_QUERY_TIMEOUT_MS", 30_000, minimum=10, maximum=3_600_000),
            heartbeat_seconds=env_int(env, "GRAPH_HEARTBEAT_SECONDS", 30, minimum=1, maximum=3600),
        )
