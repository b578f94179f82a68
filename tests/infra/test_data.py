"""The data stack: RDS PostgreSQL with a rotated secret (or an existing database),
the customer data bucket (or an existing one), and no plain-text password anywhere."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _resource(synth: Any, construct: Any) -> dict[str, Any]:
    stack = synth.stacks.data
    return synth.template(stack)["Resources"][synth.logical_id(construct)]  # type: ignore[no-any-return]


def test_rds_postgresql_is_encrypted_multi_az_protected_backed_up_and_private(synth: Any) -> None:
    database = synth.stacks.data.database
    resource = _resource(synth, database.instance)
    instance = resource["Properties"]
    assert (instance["Engine"], instance["EngineVersion"].split(".")[0]) == ("postgres", "15")
    assert instance["MultiAZ"] is True
    assert instance["StorageEncrypted"] is True
    assert instance["DeletionProtection"] is True
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Snapshot"
    assert instance["BackupRetentionPeriod"] >= 7
    assert instance["EnableIAMDatabaseAuthentication"] is True
    assert instance["PubliclyAccessible"] is False
    assert int(instance["Port"]) == synth.config.database.port != 5432
    assert instance["CACertificateIdentifier"] == "rds-ca-rsa2048-g1"
    parameters = synth.properties(database.parameter_group.node.default_child)
    assert parameters["Family"] == "postgres15"
    assert parameters["Parameters"] == {"rds.force_ssl": "1"}  # TLS or nothing
    assert instance["DBParameterGroupName"] == {"Ref": synth.logical_id(database.parameter_group)}
    subnet_group = synth.only("AWS::RDS::DBSubnetGroup", synth.stacks.data)
    assert subnet_group["SubnetIds"] and all("private" in str(s) for s in subnet_group["SubnetIds"])


def test_only_database_clients_reach_postgresql_and_only_on_its_port(synth: Any) -> None:
    database = synth.stacks.data.database
    group = synth.properties(database.security_group)
    assert group["SecurityGroupEgress"][0]["CidrIp"] == "255.255.255.255/32"  # CDK's "no egress" marker
    assert "SecurityGroupIngress" not in group
    (ingress,) = synth.resources("AWS::EC2::SecurityGroupIngress", synth.stacks.data).values()
    port = synth.config.database.port
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", port, port)
    client = synth.logical_id(database.access.client_security_group)
    assert ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": [client, "GroupId"]}


def test_master_credentials_are_generated_rotated_and_reach_rds_by_dynamic_reference(synth: Any) -> None:
    database = synth.stacks.data.database
    secrets = synth.resources("AWS::SecretsManager::Secret", synth.stacks.data)
    (secret,) = secrets.values()
    assert "SecretString" not in secret
    assert secret["GenerateSecretString"]["GenerateStringKey"] == "password"
    password = synth.properties(database.instance)["MasterUserPassword"]
    assert isinstance(password, dict), "the master password must never be a literal"
    text = synth.render(password)
    assert text.startswith("{{resolve:secretsmanager:") and text.endswith(":SecretString:password::}}")
    (secret_id,) = secrets
    assert {"Ref": secret_id} in password["Fn::Join"][1]

    rotation = synth.only("AWS::SecretsManager::RotationSchedule", synth.stacks.data)
    hosted = rotation["HostedRotationLambda"]
    assert hosted["RotationType"] == "PostgreSQLSingleUser"
    # The rotation function connects as a database client, from the private subnets.
    client = synth.logical_id(database.access.client_security_group)
    assert client in str(hosted["VpcSecurityGroupIds"])
    assert "private" in str(hosted["VpcSubnetIds"])
    assert (
        rotation["RotationRules"]["ScheduleExpression"] == f"rate({synth.config.database.rotation_days} days)"
    )
    # The attachment (host, port, dbname added to the secret) is what rotates and what the jobs read.
    attachment = synth.only("AWS::SecretsManager::SecretTargetAttachment", synth.stacks.data)
    assert attachment["TargetType"] == "AWS::RDS::DBInstance"
    assert rotation["SecretId"] == {"Ref": synth.logical_id(database.instance.secret)}
    assert synth.template(synth.stacks.data)["Transform"].startswith("AWS::SecretsManager-")


def _literal_passwords(value: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            # PasswordLength and the like describe a generator, not a password.
            if "password" in key.lower() and isinstance(item, str) and "Length" not in key:
                found.append(f"{path}/{key}")
            found += _literal_passwords(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _literal_passwords(item, f"{path}/{i}")
    return found


def test_no_template_holds_a_password_literal(synth: Any, synth_variant: Any) -> None:
    for app in (synth, synth_variant):
        for name, template in app.templates.items():
            assert _literal_passwords(template.get("Resources", {})) == [], name


def test_an_existing_database_is_used_as_given(synth_variant: Any) -> None:
    for kind in (
        "AWS::RDS::DBInstance",
        "AWS::SecretsManager::Secret",
        "AWS::SecretsManager::RotationSchedule",
        "AWS::EC2::SecurityGroup",
    ):
        assert synth_variant.resources(kind, synth_variant.stacks.data) == {}, kind


def test_customer_data_bucket_is_private_encrypted_tls_only_versioned_logged_and_kept(synth: Any) -> None:
    data = synth.stacks.data.customer_data
    bucket = _resource(synth, data.bucket)
    logs = _resource(synth, data.access_logs)
    for resource in (bucket, logs):
        properties = resource["Properties"]
        assert resource["DeletionPolicy"] == "Retain"
        rule = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    logging = bucket["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": synth.logical_id(data.access_logs)}
    policies = synth.resources("AWS::S3::BucketPolicy", synth.stacks.data).values()
    tls_only = {
        str(p["Bucket"])
        for p in policies
        for s in p["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    }
    assert tls_only == {
        str({"Ref": synth.logical_id(data.bucket)}),
        str({"Ref": synth.logical_id(data.access_logs)}),
    }


def test_an_existing_bucket_is_used_by_name(synth_variant: Any) -> None:
    assert synth_variant.resources("AWS::S3::Bucket", synth_variant.stacks.data) == {}
    assert synth_variant.stacks.data.customer_data.access_logs is None
