"""The throwaway servers every other test relies on really start and serve."""

from __future__ import annotations

import boto3
import psycopg
import redis

from beatless.local.servers import RedisServer


def test_redis_server_serves_and_restarts(own_redis: RedisServer) -> None:
    client = redis.Redis.from_url(own_redis.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    own_redis.restart()
    # no persistence: a restarted broker is empty, as after a crash without AOF
    assert client.get("k") is None


def test_postgres_database_is_fresh_and_writable(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (3,)


def test_moto_server_reached_through_aws_endpoint_url(aws: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="probe")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["probe"]
