"""The Celery broker: an ElastiCache Redis replication group.

TLS in transit, encryption at rest, an AUTH token generated in Secrets Manager
(CloudFormation reads it through a dynamic reference, so it never appears in a
template), Multi-AZ with automatic failover, a non-default port, and
`maxmemory-policy noeviction`: evicting kombu's `_kombu.binding.*` keys makes
Redis silently drop every task published afterwards.

Clients join `client_security_group`, the only group Redis accepts on its port.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Fn, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.components.network import client_security_group, service_security_group
from infra.config import BrokerConfig


class RedisBroker(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: BrokerConfig,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
    ):
        super().__init__(scope, id)
        self.port = config.port
        self.client_security_group = client_security_group(
            self,
            "ClientSecurityGroup",
            vpc=vpc,
            description="Members may connect to the Celery broker (worker tasks, monitor Lambda)",
        )
        self.security_group = service_security_group(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Celery broker (ElastiCache Redis): clients only, broker port only",
            clients=self.client_security_group,
            port=config.port,
            clients_description="Celery broker clients",
        )
        self.auth_token = self._build_auth_token()
        self.replication_group = self._build_replication_group(config, vpc, subnets)
        self.host = self.replication_group.attr_primary_end_point_address
        self.port_token = self.replication_group.attr_primary_end_point_port
        # No password in the URL: clients read it from `auth_token` themselves.
        self.url = Fn.join("", ["rediss://", self.host, ":", self.port_token, "/0"])

    def _build_auth_token(self) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "AuthToken",
            description="Redis AUTH token of the Celery broker (the raw token, not JSON)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                # ElastiCache allows 16-128 printable characters except / " @;
                # alphanumerics keep the token safe in URLs and shells too.
                password_length=64,
                exclude_punctuation=True,
            ),
        )
        Validations.of(secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SMG4",
                reason=(
                    "ElastiCache AUTH tokens rotate through ModifyReplicationGroup with the ROTATE/SET "
                    "strategy, which a Secrets Manager rotation function for this token would have to "
                    "drive; that function is not built yet, so the token is rotated by hand."
                ),
            )
        )
        return secret

    def _build_replication_group(
        self, config: BrokerConfig, vpc: ec2.IVpc, subnets: ec2.SubnetSelection
    ) -> elasticache.CfnReplicationGroup:
        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "SubnetGroup",
            description="Private subnets of the Celery broker",
            subnet_ids=vpc.select_subnets(
                subnet_type=subnets.subnet_type, subnet_group_name=subnets.subnet_group_name
            ).subnet_ids,
        )
        self.parameter_group = parameters = elasticache.CfnParameterGroup(
            self,
            "Parameters",
            cache_parameter_group_family=config.parameter_group_family,
            description="Celery broker: never evict keys (kombu bindings must survive memory pressure)",
            properties={"maxmemory-policy": "noeviction"},
        )
        group = elasticache.CfnReplicationGroup(
            self,
            "ReplicationGroup",
            replication_group_description="Beatless Celery broker",
            engine="redis",
            engine_version=config.engine_version,
            cache_node_type=config.node_type,
            num_cache_clusters=config.num_cache_clusters,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            port=config.port,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            auth_token=self.auth_token.secret_value.unsafe_unwrap(),  # a {{resolve:secretsmanager}} reference
            cache_parameter_group_name=parameters.ref,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            snapshot_retention_limit=config.snapshot_retention_days,
            auto_minor_version_upgrade=True,
        )
        return group
