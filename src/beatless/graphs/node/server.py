"""`beatless graph-node`: one graph node process (the API of `beatless.graphs.node.app`).

Trigger: systemd on a graph node instance (the launch template's user data), or
the local runner and the tests on loopback. Reads `NodeSettings` from the
environment once; the API key from `GRAPH_API_KEY_SECRET_ARN` (Secrets
Manager, `SecretString` = the key) or `GRAPH_API_KEY`; S3 and DynamoDB through
`beatless.aws` (so `AWS_ENDPOINT_URL` points them at moto locally). Registers
itself in the instance registry at start and heartbeats; on SIGTERM it stops
taking requests, finishes the running ones and closes every database.
"""

from __future__ import annotations

import logging
import os

import boto3
import uvicorn

from beatless.graphs.node.app import Node, build_app
from beatless.graphs.node.settings import NodeSettings
from beatless.graphs.registry import Registries
from beatless.secrets import CachedSecret
from beatless.settings import Env


def node_from_env(env: Env) -> Node:
    settings = NodeSettings.from_env(env)
    from beatless.aws import client  # the one client factory (AWS_ENDPOINT_URL honoured)

    key = settings.api_key
    if key is None:
        assert settings.api_key_secret_arn is not None
        key = CachedSecret(client("secretsmanager"), settings.api_key_secret_arn).get()
    registries = None
    if settings.instance_table is not None and settings.graph_table is not None:
        registries = Registries(boto3.resource("dynamodb"), settings.instance_table, settings.graph_table)
    return Node(settings, key, s3=client("s3"), registries=registries)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    node = node_from_env(os.environ)
    uvicorn.run(
        build_app(node),
        host=node.settings.host,
        port=node.settings.port,
        log_level="info",
        timeout_graceful_shutdown=60,
        access_log=False,
    )
    return 0
