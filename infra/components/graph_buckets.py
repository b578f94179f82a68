"""The graph plane's S3 buckets: uploads, staging and backups.

Each: S3-managed encryption, every public access blocked, a TLS-only bucket
policy, bucket-owner-enforced ownership, server access logs to one access-log
bucket of their own (itself encrypted, TLS-only, private, logs expire after a
year), incomplete multipart uploads aborted after a day, kept when the stack
is deleted. Lifecycle:

* uploads (customers' source files): expire after `upload_expiration_days`;
* staging (files prepared for a bulk load): expire after `staging_expiration_days`;
* backups (graph database archives, each with its SHA-256 in the metadata):
  versioned; a replaced or deleted backup's older versions expire
  `backup_retention_days` after they stopped being current.

`node_statements()` is what a graph node may do: read uploads, read and write
staging (loads and exports) and backups, on objects only. `worker_policy()` is what the
worker's operations may do, as a customer-managed policy of this stack that the worker
stack attaches to its task role (the bucket ARNs stay in the stack that owns them):
read uploads; read, write and delete staging objects. `ingestion_reader_policy()`
is what `ingestion_queue_processor` may do (`Need.INGESTION_READ`): list both buckets,
read batch manifests (`batches/*`) in uploads and reports (`ingest/*`) in staging.
`retention_policy()` is what `data_retention` may do (`Need.DATA_RETENTION`): list and
delete staging objects and backups (`backups/*`), scan the graph registry (last backups).
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.components.private_bucket import access_log_bucket, private_bucket
from infra.config import GraphConfig

ABORT_INCOMPLETE_MULTIPART = Duration.days(1)


class GraphBuckets(Construct):
    def __init__(self, scope: Construct, id: str, *, config: GraphConfig):
        super().__init__(scope, id)
        self.access_logs = access_log_bucket(self)
        self.uploads = self._bucket(
            "Uploads",
            [
                s3.LifecycleRule(
                    id="expire-uploads",
                    expiration=Duration.days(config.upload_expiration_days),
                    abort_incomplete_multipart_upload_after=ABORT_INCOMPLETE_MULTIPART,
                )
            ],
        )
        self.staging = self._bucket(
            "Staging",
            [
                s3.LifecycleRule(
                    id="expire-staging",
                    expiration=Duration.days(config.staging_expiration_days),
                    abort_incomplete_multipart_upload_after=ABORT_INCOMPLETE_MULTIPART,
                )
            ],
        )
        self.backups = self._bucket(
            "Backups",
            [
                s3.LifecycleRule(
                    id="expire-replaced-backups",
                    noncurrent_version_expiration=Duration.days(config.backup_retention_days),
                    expired_object_delete_marker=True,
                    abort_incomplete_multipart_upload_after=ABORT_INCOMPLETE_MULTIPART,
                )
            ],
            versioned=True,
        )

    def _bucket(
        self, id: str, lifecycle_rules: list[s3.LifecycleRule], *, versioned: bool = False
    ) -> s3.Bucket:
        return private_bucket(
            self,
            id,
            access_logs=self.access_logs,
            access_logs_prefix=f"{id.lower()}/",
            versioned=versioned,
            lifecycle_rules=lifecycle_rules,
        )

    @property
    def buckets(self) -> dict[str, s3.Bucket]:
        return {"uploads": self.uploads, "staging": self.staging, "backups": self.backups}

    def node_statements(self) -> list[iam.PolicyStatement]:
        """A graph node: loads read uploads and staging; exports write staging; backups write
        and restores read backups."""
        return [
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[self.uploads.arn_for_objects("*")]),
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[self.staging.arn_for_objects("*")],
            ),
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[self.backups.arn_for_objects("*")],
            ),
        ]

    def worker_policy(self) -> iam.ManagedPolicy:
        """The worker's ingestion and subgraph access (once per stack)."""
        policy = iam.ManagedPolicy(
            self,
            "WorkerAccess",
            description="Beatless worker: read uploads; read, write and clean staging (objects only)",
            statements=[
                iam.PolicyStatement(actions=["s3:GetObject"], resources=[self.uploads.arn_for_objects("*")]),
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                    resources=[self.staging.arn_for_objects("*")],
                ),
            ],
        )
        self._acknowledge_objects(
            policy,
            [(self.uploads, "*"), (self.staging, "*")],
            "Object keys are per upload batch and per operation, created at run time: the worker reads "
            "uploads and keeps staged batches in staging, in these buckets only.",
        )
        return policy

    def ingestion_reader_policy(self) -> iam.ManagedPolicy:
        """`Need.INGESTION_READ`: what the queue processor reads (once per stack)."""
        manifests = self.uploads.arn_for_objects("batches/*")
        reports = self.staging.arn_for_objects("ingest/*")
        policy = iam.ManagedPolicy(
            self,
            "IngestionReader",
            description="Beatless ingestion_queue_processor: list uploads, staging; read manifests, reports",
            statements=[
                iam.PolicyStatement(
                    actions=["s3:ListBucket"], resources=[self.uploads.bucket_arn, self.staging.bucket_arn]
                ),
                iam.PolicyStatement(actions=["s3:GetObject"], resources=[manifests, reports]),
            ],
        )
        self._acknowledge_objects(
            policy,
            [(self.uploads, "batches/*"), (self.staging, "ingest/*")],
            "Batch manifests and staging reports are named per graph and batch at run time; the "
            "processor reads only under these prefixes.",
        )
        return policy

    def api_estimates_policy(self) -> iam.ManagedPolicy:
        """The task API's cost estimates: the size of each uploaded file of a batch (HEAD needs
        s3:GetObject) and a staged batch's manifest (its rows). Nothing else, no listing."""
        uploads = self.uploads.arn_for_objects("*")
        manifests = self.staging.arn_for_objects("ingest/*/manifest.json")
        policy = iam.ManagedPolicy(
            self,
            "TaskApiEstimates",
            description="Beatless task API: size uploads (HEAD) and read staged batches' manifests",
            statements=[iam.PolicyStatement(actions=["s3:GetObject"], resources=[uploads, manifests])],
        )
        self._acknowledge_objects(
            policy,
            [(self.uploads, "*"), (self.staging, "ingest/*/manifest.json")],
            "A launch names its uploaded files and batch at run time; the API only sizes them "
            "and reads staged manifests to estimate an operation's cost.",
        )
        return policy

    @staticmethod
    def _acknowledge_objects(
        policy: iam.ManagedPolicy, objects: list[tuple[s3.Bucket, str]], reason: str
    ) -> None:
        """cdk-nag's IAM5 for object ARNs `<bucket>/<pattern>` of this stack's buckets."""
        stack = Stack.of(policy)
        for bucket, pattern in objects:
            logical = stack.get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
            finding = f"AwsSolutions::AwsSolutions-IAM5[Resource::<{logical}.Arn>/{pattern}]"
            Validations.of(policy).acknowledge(Acknowledgment(id=finding, reason=reason))

    def retention_policy(self, graph_table_arn: str) -> iam.ManagedPolicy:
        """`Need.DATA_RETENTION`: what the retention job lists, deletes and reads (once per stack)."""
        policy = iam.ManagedPolicy(
            self,
            "RetentionCleaner",
            description="Beatless data_retention: list and delete staging objects and backups",
            statements=[
                iam.PolicyStatement(
                    actions=["s3:ListBucket"], resources=[self.staging.bucket_arn, self.backups.bucket_arn]
                ),
                iam.PolicyStatement(
                    actions=["s3:DeleteObject"],
                    resources=[self.staging.arn_for_objects("*"), self.backups.arn_for_objects("backups/*")],
                ),
                iam.PolicyStatement(actions=["dynamodb:Scan"], resources=[graph_table_arn]),
            ],
        )
        self._acknowledge_objects(
            policy,
            [(self.staging, "*"), (self.backups, "backups/*")],
            "Staging files and backups are named per graph, batch and operation at run time; the job "
            "deletes only what is past its retention, never a graph's last backup.",
        )
        return policy
