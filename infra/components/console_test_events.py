"""Console test events, deployed as Lambda *shareable* test events.

The Lambda console keeps shareable test events in the EventBridge schema
registry `lambda-testevent-schemas`: one schema per function, named
`_<function name>-schema`, of type OpenApi3, whose `components.examples`
maps each event's name to `{"value": <event>}`. Every `events/<name>/*.json`
becomes an example (named after the file) of the schema of the function
`<name>`, so operators find them under "Test" in the console.

The registry exists once per account and region; the console creates it the
first time anyone saves a shareable event. `create_registry` (context
`testEventRegistry`, see infra/config.py) decides whether this stack creates
it (kept when the stack is deleted: other functions' events live there too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Fn, RemovalPolicy
from aws_cdk import aws_eventschemas as eventschemas
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from beatless.errors import ConfigurationError

REGISTRY_NAME = "lambda-testevent-schemas"
# The console's rule for test event names.
EVENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,25}$")


def load_events(directory: Path) -> dict[str, Any]:
    """Name (file stem) -> parsed event, for every *.json in `directory`."""
    events: dict[str, Any] = {}
    for path in sorted(directory.glob("*.json")):
        if not EVENT_NAME.match(path.stem):
            raise ConfigurationError(
                f"{path}: a console test event name is 1-25 letters, digits, '.', '_' or '-'"
            )
        try:
            events[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"{path}: not valid JSON: {error}") from None
    return events


def schema_content(events: Mapping[str, Any]) -> str:
    """The OpenAPI document the console reads the events from."""
    document = {
        "openapi": "3.0.0",
        "info": {"version": "1.0.0", "title": "Event"},
        "paths": {},
        "components": {
            "schemas": {"Event": {"type": "object"}},
            "examples": {name: {"value": event} for name, event in events.items()},
        },
    }
    return json.dumps(document, indent=1, sort_keys=True)


class ConsoleTestEvents(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        events_dir: Path,
        create_registry: bool,
        known: Collection[str] = (),
    ):
        """`functions`: those of this stack whose events to deploy; `known`: every Lambda of
        the app (another stack deploys the rest's events)."""
        super().__init__(scope, id)
        names = {*functions, *known}
        stale = sorted(p.name for p in events_dir.iterdir() if p.is_dir() and p.name not in names)
        if stale:
            raise ConfigurationError(
                f"{events_dir}: test events for functions that do not exist: {', '.join(stale)}"
            )
        self.registry: eventschemas.CfnRegistry | None = None
        registry_name = REGISTRY_NAME
        if create_registry:
            self.registry = eventschemas.CfnRegistry(
                self,
                "Registry",
                registry_name=REGISTRY_NAME,
                description="Lambda console shareable test events",
            )
            self.registry.apply_removal_policy(RemovalPolicy.RETAIN)
            registry_name = self.registry.attr_registry_name
        self.schemas: dict[str, eventschemas.CfnSchema] = {}
        for name, function in functions.items():
            events = load_events(events_dir / name)
            if not events:
                continue
            self.schemas[name] = eventschemas.CfnSchema(
                self,
                f"{''.join(part.capitalize() for part in name.split('_'))}Schema",
                registry_name=registry_name,
                schema_name=Fn.join("", ["_", function.function_name, "-schema"]),
                type="OpenApi3",
                description=f"Console test events of {name} (events/{name}/*.json)",
                content=schema_content(events),
            )
