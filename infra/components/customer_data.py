"""The customer data bucket (graph backups, uploads), new or existing.

New: S3-managed encryption, every public access blocked, TLS-only bucket
policy, versioning, server access logs to a second bucket (itself encrypted,
TLS-only, private, logs expire after a year), both kept when the stack is
deleted. Existing (`storageBucketName`): referenced by name only.

`access` is what a job with `Need.STORAGE_READ` receives (the storage usage
collector lists object sizes under the graph prefixes).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.components.private_bucket import access_log_bucket, private_bucket
from infra.config import StorageConfig


@dataclass(frozen=True)
class StorageAccess:
    bucket_name: str
    bucket_arn: str


class CustomerData(Construct):
    def __init__(self, scope: Construct, id: str, *, config: StorageConfig):
        super().__init__(scope, id)
        self.access_logs: s3.Bucket | None = None
        self.bucket: s3.IBucket
        if config.bucket_name:
            self.bucket = s3.Bucket.from_bucket_name(self, "Bucket", config.bucket_name)
        else:
            self.access_logs = access_log_bucket(self)
            self.bucket = private_bucket(
                self,
                "Bucket",
                access_logs=self.access_logs,
                access_logs_prefix="customer-data/",
                versioned=True,
            )
        self.access = StorageAccess(bucket_name=self.bucket.bucket_name, bucket_arn=self.bucket.bucket_arn)
