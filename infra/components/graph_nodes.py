"""The graph nodes: an Auto Scaling group of EC2 instances, each running one
`beatless graph-node` (LadybugDB behind its HTTP API).

* Security group: the node port from the graph clients' group only (the
  worker tasks and the monitor Lambda join it); outbound open (AWS APIs, the
  OS and package repositories at boot, through the NAT gateway).
* Launch template: Amazon Linux 2023 for the instance type's architecture
  (Graviton by default; `ladybug` ships aarch64 and x86_64 wheels), IMDSv2
  required (hop limit 1), detailed monitoring, an encrypted gp3 root volume and
  an encrypted gp3 data volume (`graph_node_user_data.DATA_DEVICE`), the user
  data of `graph_node_user_data` (no secret in it: the secret's ARN only).
* Instance role (inline statements only): its two registry tables and the
  graph index, the objects of the three buckets (read uploads and staging,
  read/write backups), the API key secret, the node software object in the
  CDK assets bucket, scale-in protection, instance health and the lifecycle
  hook of its own group, and what Session Manager / Run Command need for
  operators (the actions of AmazonSSMManagedInstanceCore that they use).
* Group: private subnets, min..max nodes, group metrics, a fixed name
  (`<stack>-graph-nodes`: the user data, the role and the monitor name it
  without a reference cycle). No rolling update policy: a node's databases
  live on its own volume, so a launch template change applies to new nodes
  and operators drain and replace old ones.
* Termination lifecycle hook: `HOOK_NAME`, heartbeat `HOOK_HEARTBEAT`,
  default result CONTINUE; the node completes it itself after a clean stop.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, ArnFormat, Duration, Stack, Validations
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.components.graph_buckets import GraphBuckets
from infra.components.graph_node_software import GraphNodeSoftware
from infra.components.graph_node_user_data import DATA_DEVICE, node_environment, user_data_script
from infra.components.graph_registry import GraphRegistryAccess
from infra.config import GraphConfig

HOOK_NAME = "graph-node-termination"
HOOK_HEARTBEAT = Duration.seconds(300)
ROOT_VOLUME_GIB = 30

# Session Manager and Run Command on the instance (the part of
# AmazonSSMManagedInstanceCore they use); none takes resource-level scoping.
SSM_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssm:ListInstanceAssociations",
    "ssm:DescribeAssociation",
    "ssm:GetDocument",
    "ssm:DescribeDocument",
    "ssm:UpdateInstanceAssociationStatus",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
)


def asg_name_for(stack: Stack) -> str:
    return f"{stack.stack_name}-graph-nodes"


class GraphNodes(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: GraphConfig,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        clients: ec2.ISecurityGroup,
        registry: GraphRegistryAccess,
        buckets: GraphBuckets,
        api_key: secretsmanager.ISecret,
        software: GraphNodeSoftware,
    ):
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.port = config.node_port
        self.asg_name = asg_name_for(stack)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Graph nodes: their API port from the graph clients group only",
            allow_all_outbound=True,
        )
        self.security_group.add_ingress_rule(
            clients, ec2.Port.tcp(config.node_port), "Graph clients (worker tasks, monitor Lambda)"
        )
        self.asg_arn = stack.format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            # The group's id (a UUID) is part of its ARN and unknown before it exists.
            resource_name=f"*:autoScalingGroupName/{self.asg_name}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role = self._build_role(registry, buckets, api_key, software)
        self.environment = node_environment(
            port=config.node_port,
            capacity=config.node_capacity,
            api_key_secret_arn=api_key.secret_arn,
            asg_name=self.asg_name,
            instance_table=registry.instance_table_name,
            graph_table=registry.graph_table_name,
            region=stack.region,
        )
        self.user_data_text = user_data_script(
            environment=self.environment,
            software_url=software.s3_url,
            region=stack.region,
            hook_name=HOOK_NAME,
            port=config.node_port,
        )
        instance_type = ec2.InstanceType(config.instance_type)
        cpu = (
            ec2.AmazonLinuxCpuType.ARM_64
            if instance_type.architecture == ec2.InstanceArchitecture.ARM_64
            else ec2.AmazonLinuxCpuType.X86_64
        )
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=instance_type,
            machine_image=ec2.MachineImage.latest_amazon_linux2023(cpu_type=cpu),
            user_data=ec2.UserData.custom(self.user_data_text),
            role=self.role,
            security_group=self.security_group,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            ebs_optimized=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        ROOT_VOLUME_GIB,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        delete_on_termination=True,
                    ),
                ),
                ec2.BlockDevice(
                    device_name=DATA_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        config.data_volume_gib,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        # The databases are backed up to S3; a terminated node's volume goes with it.
                        delete_on_termination=True,
                    ),
                ),
            ],
        )
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=vpc,
            vpc_subnets=subnets,
            launch_template=self.launch_template,
            auto_scaling_group_name=self.asg_name,
            min_capacity=config.min_nodes,
            max_capacity=config.max_nodes,
            group_metrics=[autoscaling.GroupMetrics.all()],
            health_checks=autoscaling.HealthChecks.ec2(grace_period=Duration.minutes(10)),
        )
        self.termination_hook = self.group.add_lifecycle_hook(
            "TerminationHook",
            lifecycle_hook_name=HOOK_NAME,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=HOOK_HEARTBEAT,
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        self._acknowledge(buckets)

    def _build_role(
        self,
        registry: GraphRegistryAccess,
        buckets: GraphBuckets,
        api_key: secretsmanager.ISecret,
        software: GraphNodeSoftware,
    ) -> iam.Role:
        statements = [
            *registry.statements(),
            *buckets.node_statements(),
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[api_key.secret_arn]),
            software.read_statement(),
            iam.PolicyStatement(
                actions=[
                    "autoscaling:SetInstanceProtection",
                    "autoscaling:SetInstanceHealth",
                    "autoscaling:CompleteLifecycleAction",
                    "autoscaling:RecordLifecycleActionHeartbeat",
                ],
                resources=[self.asg_arn],
            ),
            iam.PolicyStatement(actions=list(SSM_ACTIONS), resources=["*"]),
        ]
        return iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="A Beatless graph node: its registries, buckets, API key and own group",
            inline_policies={"GraphNode": iam.PolicyDocument(statements=statements)},
        )

    def _acknowledge(self, buckets: GraphBuckets) -> None:
        stack = Stack.of(self)
        objects = [
            f"Resource::<{stack.get_logical_id(bucket.node.default_child)}.Arn>/*"  # type: ignore[arg-type]
            for bucket in buckets.buckets.values()
        ]
        group = (
            f"Resource::arn:<AWS::Partition>:autoscaling:{stack.region}:{stack.account}:"
            f"autoScalingGroup:*:autoScalingGroupName/{self.asg_name}"
        )
        reasons = {
            "Resource::*": (
                "Session Manager and Run Command (ssm:UpdateInstanceInformation, ssmmessages:*Channel, "
                "ec2messages:*) take no resource-level scoping; this is the part of "
                "AmazonSSMManagedInstanceCore operators use to reach a node without SSH."
            ),
            group: (
                "The Auto Scaling group's ARN contains its UUID, unknown before it exists; the name part "
                "pins the statement to this group (scale-in protection, health, its lifecycle hook)."
            ),
        }
        for resource in objects:
            reasons[resource] = (
                "Object keys are per graph and per load or backup, created at run time: the node reads "
                "uploads and staging and writes backups anywhere in these buckets, and nowhere else."
            )
        for finding, reason in reasons.items():
            Validations.of(self.role).acknowledge(
                Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[{finding}]", reason=reason)
            )
        Validations.of(self.group).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-AS3",
                reason=(
                    "Launches and terminations reach the kuzu_instance_monitor through the EC2 state-change "
                    "rule and stay in the group's activity history; the alarm topic's KMS key admits "
                    "CloudWatch only, and Auto Scaling's service-linked role cannot be named in it before "
                    "the role exists in a new account."
                ),
            )
        )
