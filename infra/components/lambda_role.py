"""The execution role of a Beatless Lambda: our own, instead of the managed
AWSLambdaBasicExecutionRole / AWSLambdaVPCAccessExecutionRole.

It logs only to the function's own log group; a function in a VPC also gets
the network-interface actions Lambda needs to attach it (the set of
AWSLambdaVPCAccessExecutionRole, which takes no resource-level scoping). The
cdk-nag IAM5 finding for `Resource::*` is acknowledged on the role with the
reason of each wildcard statement.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

# What AWSLambdaVPCAccessExecutionRole grants: Lambda manages the function's
# network interfaces with the function's own role.
VPC_NETWORK_INTERFACE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
VPC_WILDCARD_REASON = (
    "ec2 network-interface actions for Lambda VPC networking (the set of "
    "AWSLambdaVPCAccessExecutionRole) take no resource-level scoping"
)
WILDCARD_RESOURCE_RULE = "AwsSolutions::AwsSolutions-IAM5[Resource::*]"


def log_statement(log_group: logs.ILogGroup) -> iam.PolicyStatement:
    """Write to this log group only."""
    return iam.PolicyStatement(
        actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
    )


def lambda_execution_role(
    scope: Construct,
    id: str,
    *,
    description: str,
    policy_name: str,
    log_group: logs.ILogGroup,
    statements: Sequence[iam.PolicyStatement] = (),
    in_vpc: bool,
    wildcard_reasons: Sequence[str] = (),
) -> iam.Role:
    """One inline policy `policy_name`: logs to `log_group`, then `statements`,
    then (`in_vpc`) the network-interface actions. `wildcard_reasons`: why each
    of `statements` on `*` cannot be scoped (for the IAM5 acknowledgement)."""
    document = [log_statement(log_group), *statements]
    reasons = list(wildcard_reasons)
    if in_vpc:
        document.append(iam.PolicyStatement(actions=list(VPC_NETWORK_INTERFACE_ACTIONS), resources=["*"]))
        reasons.append(VPC_WILDCARD_REASON)
    role = iam.Role(
        scope,
        id,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
        inline_policies={policy_name: iam.PolicyDocument(statements=document)},
    )
    if reasons:
        Validations.of(role).acknowledge(
            Acknowledgment(id=WILDCARD_RESOURCE_RULE, reason="; ".join(reasons) + ".")
        )
    return role
