"""The graph nodes' API key: a Secrets Manager secret whose `SecretString` is the
key itself (48 letters and digits, generated at deploy time; no JSON), as
`beatless.graphs.node.settings` and the monitor read it
(`GRAPH_API_KEY_SECRET_ARN`). Only its ARN appears anywhere: the nodes and the
clients fetch the value themselves."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

KEY_LENGTH = 48


class GraphApiKey(Construct):
    def __init__(self, scope: Construct, id: str):
        super().__init__(scope, id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="API key of the Beatless graph nodes (the raw key, not JSON)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=KEY_LENGTH, exclude_punctuation=True
            ),
        )
        Validations.of(self.secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SMG4",
                reason=(
                    "The graph API key is read once at start by every node and client; a rotation would "
                    "need the nodes to accept the old and the new key during the switch, which they do not "
                    "yet. Rotate by hand: put a new value, then restart the nodes and the clients."
                ),
            )
        )
