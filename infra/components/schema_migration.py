"""Database migrations on deploy: `bin/lambda/db_migrate.py` as a custom resource.

A CDK `Provider` (the custom-resource framework) calls the migration Lambda
(the jobs' own code asset, in the VPC as a database client, reading the same
secret) with Create/Update/Delete; the handler applies pending migrations and
never drops anything. The resource's `MigrationsHash` property is a digest of
`src/beatless/db/migrations/*`, so CloudFormation sends an Update, and the
migrations run, on every deploy in which they changed, and only then.

The jobs that need the database depend on this resource: on the first deploy
their functions and schedules are created only after the schema exists, and
on later deploys their code is updated only after the migrations ran (the
migrations must therefore keep the previous code working: expand, then
contract in a later release).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aws_cdk import Acknowledgment, CustomResource, Duration, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from beatless.errors import ConfigurationError
from beatless.jobs import FUNCTION_LIMITS
from infra.components.database import DatabaseAccess
from infra.components.lambda_role import lambda_execution_role

HANDLER = "db_migrate"
TIMEOUT_SECONDS = FUNCTION_LIMITS[HANDLER].timeout_seconds
# Statements of a migration may run long; keep them under the function's timeout.
STATEMENT_TIMEOUT_MS = (TIMEOUT_SECONDS - 30) * 1000


def migrations_hash(migrations_dir: Path) -> str:
    """SHA-256 over the names and bytes of the migration files (sorted)."""
    files = sorted(p for p in migrations_dir.glob("*") if p.is_file() and p.suffix == ".sql")
    if not files:
        raise ConfigurationError(f"no migrations (*.sql) in {migrations_dir}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class SchemaMigration(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code: lambda_.Code,
        handlers_dir: Path,
        migrations_dir: Path,
        database: DatabaseAccess,
        log_retention: logs.RetentionDays,
    ):
        super().__init__(scope, id)
        if not (handlers_dir / f"{HANDLER}.py").is_file():
            raise ConfigurationError(
                f"jobs need the database, so migrations run on deploy: {handlers_dir / HANDLER}.py is missing"
            )
        self.migrations_hash = migrations_hash(migrations_dir)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention)
        role = lambda_execution_role(
            self,
            "Role",
            description="Runs the database migrations on deploy",
            policy_name="Migrate",
            log_group=self.log_group,
            statements=[
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue"], resources=[database.secret.secret_arn]
                )
            ],
            in_vpc=True,
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description="Applies pending database migrations (CloudFormation custom resource)",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler=f"{HANDLER}.handler",
            code=code,
            timeout=Duration.seconds(TIMEOUT_SECONDS),
            memory_size=FUNCTION_LIMITS[HANDLER].memory_mb,
            environment={**database.environment, "STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS)},
            role=role,
            log_group=self.log_group,
            vpc=database.vpc,
            vpc_subnets=database.subnets,
            security_groups=[database.client_security_group],
        )
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-L1",
                reason=(
                    "Pinned to python3.12 like every Beatless Lambda: the shared bundle's binary wheels "
                    "are resolved for CPython 3.12 (infra/components/lambda_bundle.py)."
                ),
            )
        )
        self.provider_logs = logs.LogGroup(self, "ProviderLogs", retention=log_retention)
        # Our own role for the framework's function: logs to its group only, instead
        # of the AWSLambdaBasicExecutionRole managed policy it would get.
        provider_role = lambda_execution_role(
            self,
            "ProviderRole",
            description="CDK custom-resource framework: invokes the migration Lambda",
            policy_name="Logs",
            log_group=self.provider_logs,
            in_vpc=False,
        )
        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.function,
            log_group=self.provider_logs,
            framework_on_event_role=provider_role,
        )
        Validations.of(provider_role).acknowledge(
            Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::<{self._function_id()}.Arn>:*]",
                reason=(
                    "The CDK Provider framework grants lambda:InvokeFunction on the migration function "
                    "and its qualifiers (<arn>:*); the function publishes no versions or aliases, so this "
                    "role can invoke that one function only."
                ),
            )
        )
        self.resource = CustomResource(
            self,
            "Schema",
            service_token=self.provider.service_token,
            resource_type="Custom::BeatlessSchema",
            properties={"MigrationsHash": self.migrations_hash},
        )
        self.version = self.resource.get_att_string("Version")

    def _function_id(self) -> str:
        """The logical id cdk-nag names the function by in its findings."""
        cfn = self.function.node.default_child
        assert isinstance(cfn, lambda_.CfnFunction)
        return str(Stack.of(self).resolve(cfn.logical_id))
