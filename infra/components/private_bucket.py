"""The one shape of every bucket Beatless creates: S3-managed encryption, every public
access blocked, TLS only, bucket-owner-enforced ownership, kept when the stack goes."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

ACCESS_LOG_RETENTION = Duration.days(365)


def private_bucket(
    scope: Construct,
    id: str,
    *,
    access_logs: s3.IBucket | None = None,
    access_logs_prefix: str | None = None,
    versioned: bool = False,
    lifecycle_rules: Sequence[s3.LifecycleRule] | None = None,
) -> s3.Bucket:
    logging: dict[str, object] = (
        {}
        if access_logs is None
        else {"server_access_logs_bucket": access_logs, "server_access_logs_prefix": access_logs_prefix}
    )
    return s3.Bucket(
        scope,
        id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        versioned=versioned,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        lifecycle_rules=list(lifecycle_rules or []),
        removal_policy=RemovalPolicy.RETAIN,
        **logging,  # type: ignore[arg-type]
    )


def access_log_bucket(scope: Construct, id: str = "AccessLogs") -> s3.Bucket:
    """Where the buckets of one construct write their server access logs (kept a year)."""
    return private_bucket(scope, id, lifecycle_rules=[s3.LifecycleRule(expiration=ACCESS_LOG_RETENTION)])
