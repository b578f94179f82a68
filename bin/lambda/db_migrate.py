"""db_migrate: applies the PostgreSQL schema migrations on every deploy.

Trigger: a CloudFormation custom resource (CDK `Provider` framework, onEvent),
not a schedule. Create/Update: applies every migration the database has not
seen (`beatless.db.migrate`: one transaction each, serialized by an advisory
lock, so two deploys cannot collide) and returns
{"PhysicalResourceId": "beatless-schema", "Data": {"Version": <newest applied
version>, "Applied": <comma-separated versions applied now>}}. Delete: changes
nothing (data is never dropped by a deploy) and returns the same id.
Idempotency: applying again is a no-op. A failure raises (the Provider
framework reports it to CloudFormation, which rolls the deploy back).
Settings: `beatless.db.settings` (DATABASE_SECRET_ARN, DATABASE_SSLMODE, ...;
give STATEMENT_TIMEOUT_MS room for index builds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger

from beatless.db import database_from_env, migrate
from beatless.errors import InvalidInputError

PHYSICAL_RESOURCE_ID = "beatless-schema"
logger = Logger(service="db_migrate")


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    request = event.get("RequestType") if isinstance(event, Mapping) else None
    if request == "Delete":
        logger.info("schema kept on Delete")
        return {"PhysicalResourceId": PHYSICAL_RESOURCE_ID}
    if request not in ("Create", "Update"):
        raise InvalidInputError("RequestType", f"must be Create, Update or Delete, got {request!r}")
    database = database_from_env(os.environ)
    with database.connect(application_name="beatless:db_migrate") as conn:
        result = migrate(conn)
    logger.info(
        "schema migrated", extra={"migration": result.as_dict(), "database": database.settings.describe()}
    )
    data = {"Version": result.version or "", "Applied": ",".join(result.applied)}
    return {"PhysicalResourceId": PHYSICAL_RESOURCE_ID, "Data": data}
