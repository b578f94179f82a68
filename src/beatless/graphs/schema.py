"""A graph's schema: node and relationship tables, validated, and the DDL that makes them.

The JSON a caller sends (the graph node's create endpoint, the worker's tasks)::

    {"nodes": [{"name": "Company", "primary_key": "id",
                "properties": {"id": "STRING", "name": "STRING", "revenue": "DOUBLE"}}],
     "relationships": [{"name": "Owns", "from": "Company", "to": "Company",
                        "properties": {"share": "DOUBLE"}}]}

Every error is an `InvalidInputError` whose field is the path of the offending
value (`schema.nodes[0].properties.revenue`). Names are identifiers (letters,
digits, `_`; a letter first; at most 63 characters) and unique across all
tables, case-insensitively, as the engine sees them; a relationship's ends are
node tables of the schema. The DDL quotes every name, so a name that is a
Cypher keyword is still a name. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from beatless.errors import InvalidInputError

TYPES = (
    "STRING",
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "INT128",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FLOAT",
    "DOUBLE",
    "DATE",
    "TIMESTAMP",
    "INTERVAL",
    "UUID",
    "BLOB",
)
PRIMARY_KEY_TYPES = (
    "STRING", "INT8", "INT16", "INT32", "INT64", "INT128",
    "UINT8", "UINT16", "UINT32", "UINT64", "DATE", "UUID",
)  # fmt: skip
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
MAX_TABLES = 200
MAX_PROPERTIES = 500


@dataclass(frozen=True)
class NodeTable:
    name: str
    primary_key: str
    properties: Mapping[str, str]  # name -> type, in declaration order

    def ddl(self) -> str:
        columns = ", ".join(f"`{name}` {kind}" for name, kind in self.properties.items())
        return f"CREATE NODE TABLE `{self.name}`({columns}, PRIMARY KEY (`{self.primary_key}`))"


@dataclass(frozen=True)
class RelTable:
    name: str
    source: str
    target: str
    properties: Mapping[str, str]

    def ddl(self) -> str:
        columns = "".join(f", `{name}` {kind}" for name, kind in self.properties.items())
        return f"CREATE REL TABLE `{self.name}`(FROM `{self.source}` TO `{self.target}`{columns})"


@dataclass(frozen=True)
class GraphSchema:
    nodes: tuple[NodeTable, ...]
    relationships: tuple[RelTable, ...]

    def ddl(self) -> list[str]:
        """The statements that create the schema (node tables first)."""
        return [table.ddl() for table in self.nodes] + [table.ddl() for table in self.relationships]

    def table(self, name: str) -> NodeTable | RelTable | None:
        tables: list[NodeTable | RelTable] = [*self.nodes, *self.relationships]
        return next((table for table in tables if table.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": [
                {"name": t.name, "primary_key": t.primary_key, "properties": dict(t.properties)}
                for t in self.nodes
            ],
            "relationships": [
                {"name": t.name, "from": t.source, "to": t.target, "properties": dict(t.properties)}
                for t in self.relationships
            ],
        }

    @classmethod
    def parse(cls, value: Any, field: str = "schema") -> GraphSchema:
        data = _object(value, field, required={"nodes"}, optional={"relationships"})
        nodes_raw = _list(data["nodes"], f"{field}.nodes", minimum=1)
        rels_raw = _list(data.get("relationships", []), f"{field}.relationships", minimum=0)
        if len(nodes_raw) + len(rels_raw) > MAX_TABLES:
            raise InvalidInputError(field, f"at most {MAX_TABLES} tables")
        seen: dict[str, str] = {}
        nodes = tuple(_node(item, f"{field}.nodes[{i}]", seen) for i, item in enumerate(nodes_raw))
        node_names = {t.name for t in nodes}
        rels = tuple(
            _relationship(item, f"{field}.relationships[{i}]", seen, node_names)
            for i, item in enumerate(rels_raw)
        )
        return cls(nodes, rels)


def _object(value: Any, field: str, *, required: set[str], optional: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(field, f"must be an object, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in required | optional)
    if unknown:
        raise InvalidInputError(f"{field}.{unknown[0]}", "unknown key")
    for key in sorted(required):
        if key not in value:
            raise InvalidInputError(f"{field}.{key}", "is required")
    return value


def _list(value: Any, field: str, *, minimum: int) -> Sequence[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(field, f"must be a list, got {type(value).__name__}")
    if len(value) < minimum:
        raise InvalidInputError(field, f"must have at least {minimum} item(s)")
    return value


def _name(value: Any, field: str, seen: dict[str, str] | None = None) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInputError(
            field, f"must be a letter then letters, digits or _ (at most 63), got {value!r}"
        )
    if seen is not None:
        folded = value.lower()
        if folded in seen:
            raise InvalidInputError(field, f"{value!r} is already the name of {seen[folded]}")
        seen[folded] = field
    return value


def _properties(value: Any, field: str, *, minimum: int) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(field, f"must be an object of name -> type, got {type(value).__name__}")
    if not minimum <= len(value) <= MAX_PROPERTIES:
        raise InvalidInputError(field, f"must have {minimum} to {MAX_PROPERTIES} properties")
    properties: dict[str, str] = {}
    folded: set[str] = set()
    for name, kind in value.items():
        where = f"{field}.{name}"
        _name(name, where)
        if name.lower() in folded:
            raise InvalidInputError(where, "is declared twice (names are case-insensitive)")
        folded.add(name.lower())
        if not isinstance(kind, str) or kind.upper() not in TYPES:
            raise InvalidInputError(where, f"type must be one of {', '.join(TYPES)}, got {kind!r}")
        properties[name] = kind.upper()
    return properties


def _node(value: Any, field: str, seen: dict[str, str]) -> NodeTable:
    data = _object(value, field, required={"name", "primary_key", "properties"}, optional=set())
    name = _name(data["name"], f"{field}.name", seen)
    properties = _properties(data["properties"], f"{field}.properties", minimum=1)
    key = data["primary_key"]
    if not isinstance(key, str) or key not in properties:
        raise InvalidInputError(f"{field}.primary_key", f"must name one of its properties, got {key!r}")
    if properties[key] not in PRIMARY_KEY_TYPES:
        raise InvalidInputError(
            f"{field}.primary_key",
            f"{key!r} is {properties[key]}: a key is one of {', '.join(PRIMARY_KEY_TYPES)}",
        )
    return NodeTable(name, key, properties)


def _relationship(value: Any, field: str, seen: dict[str, str], nodes: set[str]) -> RelTable:
    data = _object(value, field, required={"name", "from", "to"}, optional={"properties"})
    name = _name(data["name"], f"{field}.name", seen)
    ends = []
    for end in ("from", "to"):
        table = data[end]
        if table not in nodes:
            raise InvalidInputError(f"{field}.{end}", f"must name a node table of the schema, got {table!r}")
        ends.append(table)
    properties = _properties(data.get("properties", {}), f"{field}.properties", minimum=0)
    return RelTable(name, ends[0], ends[1], properties)
