"""The VPC everything runs in (a new one with flow logs, or an existing one),
and the security-group pattern of its private services: a client group whose
members may connect, and the service's own group that accepts only that
client group, on the service's port only, and opens no outbound connection."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import NetworkConfig


def client_security_group(scope: Construct, id: str, *, vpc: ec2.IVpc, description: str) -> ec2.SecurityGroup:
    """Membership is the permission: the service's group accepts this group."""
    return ec2.SecurityGroup(scope, id, vpc=vpc, description=description, allow_all_outbound=True)


def service_security_group(
    scope: Construct,
    id: str,
    *,
    vpc: ec2.IVpc,
    description: str,
    clients: ec2.ISecurityGroup,
    port: int,
    clients_description: str,
) -> ec2.SecurityGroup:
    """A service's own group: inbound from `clients` on `port` only, no outbound."""
    group = ec2.SecurityGroup(scope, id, vpc=vpc, description=description, allow_all_outbound=False)
    group.add_ingress_rule(clients, ec2.Port.tcp(port), clients_description)
    return group


class Network(Construct):
    """`vpc` has public subnets (the NAT gateway) and private subnets with egress
    (the worker tasks, the Redis nodes and the Lambdas that need the broker)."""

    def __init__(
        self, scope: Construct, id: str, *, config: NetworkConfig, log_retention: logs.RetentionDays
    ):
        super().__init__(scope, id)
        self.vpc: ec2.IVpc
        if config.vpc_id:
            # Needs credentials once; the CLI then caches the answer in cdk.context.json.
            self.vpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=config.vpc_id)
        else:
            self.vpc = self._build_vpc(config, log_retention)
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

    def _build_vpc(self, config: NetworkConfig, log_retention: logs.RetentionDays) -> ec2.Vpc:
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=config.max_azs,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
        )
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=log_retention)
        vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        return vpc
