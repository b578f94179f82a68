"""Analytics in process on the real runtime, a real graph node and PostgreSQL:
`detect_communities` recovers planted communities (normalized mutual information >= 0.9),
stores each node's community in the graph and the summary in the graph registry;
`resolve_entities` merges known duplicates into canonical nodes with aliases, loses no
relationship, and audits every merge."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import psycopg
import pytest

from beatless import credits
from beatless.analytics.scores import normalized_mutual_information
from beatless.errors import InvalidInputError
from beatless.graphs.registry import Registries
from beatless.local.servers import GraphNodeServer
from beatless.operations.catalogue import operation
from beatless.operations.resources import OperationResources
from beatless.operations.runtime import run_operation
from tests.support.jobs import graph
from tests.support.operations import (  # noqa: F401 (node, registries, resources: fixtures)
    BUCKET,
    answers,
    client,
    node,
    put_csv,
    registries,
    resources,
)

pytestmark = pytest.mark.slow

CREDIT = credits.MICRO_PER_CREDIT
SCHEMA = {
    "nodes": [
        {"name": "Company", "primary_key": "id", "properties": {"id": "STRING", "sector": "STRING"}},
        {"name": "Person", "primary_key": "id", "properties": {"id": "STRING"}},
    ],
    "relationships": [
        {"name": "Trades", "from": "Company", "to": "Company", "properties": {"volume": "DOUBLE"}},
        {"name": "Supplies", "from": "Company", "to": "Company"},
        {"name": "Directs", "from": "Person", "to": "Company"},
    ],
}


def planted(
    communities: int = 8, size: int = 40, p_in: float = 0.3, p_out: float = 0.004
) -> tuple[list[int], list[tuple[int, int]]]:
    rng = random.Random(11)
    truth = [i // size for i in range(communities * size)]
    edges = [
        (i, j)
        for i in range(len(truth))
        for j in range(i + 1, len(truth))
        if rng.random() < (p_in if truth[i] == truth[j] else p_out)
    ]
    return truth, edges


@pytest.fixture
def network(conn: psycopg.Connection, resources: OperationResources, node: GraphNodeServer) -> list[int]:
    graph(conn, "net", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), {"graph_id": "net", "schema": SCHEMA}, resources=resources)
    truth, edges = planted()
    half = len(edges) // 2  # the edges split over the two relationship tables
    files = [
        ("Company", put_csv("net/companies.csv", "id,sector", [f"c{i},s{i % 3}" for i in range(len(truth))])),
        ("Person", put_csv("net/people.csv", "id", ["p1"])),
        ("Trades", put_csv("net/trades.csv", "from,to,volume", [f"c{i},c{j},1.0" for i, j in edges[:half]])),
        ("Supplies", put_csv("net/supplies.csv", "from,to", [f"c{j},c{i}" for i, j in edges[half:]])),
        ("Directs", put_csv("net/directs.csv", "from,to", ["p1,c0"])),
    ]
    client(node).load("net", "seed", BUCKET, files)
    return truth


def test_planted_communities_are_recovered_and_stored_in_the_graph(
    resources: OperationResources, registries: Registries, node: GraphNodeServer, network: list[int]
) -> None:
    outcome = run_operation(
        operation("detect_communities"), {"graph_id": "net", "node_table": "Company"}, resources=resources
    )
    result = outcome.result
    assert result["relationship_tables"] == ["Trades", "Supplies"]  # Directs joins Person, not Company
    assert result["nodes"] == len(network) and result["communities"] >= 8
    assert result["modularity"] > 0.6
    rows = answers(node, "net", "MATCH (c:Company) RETURN c.id, c.community")
    found = dict(rows)
    assert all(isinstance(label, int) for label in found.values())
    recovered = [found[f"c{i}"] for i in range(len(network))]
    assert normalized_mutual_information(network, recovered) >= 0.9
    assert Counter(recovered).most_common(1)[0][0] == 0  # numbered by size, largest first
    recorded = json.loads(registries.graphs.get_item(Key={"graph_id": "net"})["Item"]["communities"])
    assert recorded["communities"] == result["communities"] and recorded["modularity"] == result["modularity"]
    # A rerun stores its own communities (PLM on several threads may move a node differently),
    # as good as the first.
    again = run_operation(
        operation("detect_communities"),
        {"graph_id": "net", "node_table": "Company"},
        resources=resources,
        operation_id="again",
    )
    assert abs(again.result["modularity"] - result["modularity"]) <= 0.01
    stored = dict(answers(node, "net", "MATCH (c:Company) RETURN c.id, c.community"))
    assert len(set(stored.values())) == again.result["communities"]
    assert normalized_mutual_information(recovered, [stored[f"c{i}"] for i in range(len(network))]) >= 0.9


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"node_table": "Nope"}, "params.node_table"),
        ({"node_table": "Person"}, "params.relationship_tables"),  # nothing joins Person to itself
        ({"node_table": "Company", "relationship_tables": ["Directs"]}, "params.relationship_tables[0]"),
        ({"node_table": "Company", "property": "sector"}, "params.property"),  # a STRING already
        ({"node_table": "Company", "resolution": 0}, "params.resolution"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(
    resources: OperationResources,
    node: GraphNodeServer,
    network: list[int],
    params: dict[str, Any],
    field: str,
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        run_operation(operation("detect_communities"), {"graph_id": "net", **params}, resources=resources)
    assert refused.value.field == field
    columns = client(node).request("GET", "/databases/net")["tables"]["Company"]["columns"]
    assert "community" not in columns  # nothing written


ENTITIES = {
    "nodes": [
        {"name": "Place", "primary_key": "id", "properties": {"id": "STRING", "name": "STRING"}},
        {"name": "Filing", "primary_key": "id", "properties": {"id": "STRING"}},
    ],
    "relationships": [
        {"name": "Near", "from": "Place", "to": "Place", "properties": {"km": "DOUBLE"}},
        {"name": "Mentions", "from": "Filing", "to": "Place"},
    ],
}
PLACES = {
    "p1": "NYC",
    "p2": "New York City",
    "p3": "New York",
    "p4": "Acme Corp",
    "p5": "ACME Corporation",
    "p6": "Globex",
    "p7": "Initech",
    "p8": "Initech, Inc.",
    "p9": "Boston",
    "p10": "Bostn",
}


def test_known_duplicates_are_merged_with_aliases_no_relationship_lost_and_every_merge_audited(
    conn: psycopg.Connection, resources: OperationResources, node: GraphNodeServer
) -> None:
    graph(conn, "ent", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), {"graph_id": "ent", "schema": ENTITIES}, resources=resources)
    near = [
        ("p1", "p6", 1.0),
        ("p2", "p3", 2.0),
        ("p3", "p4", 3.0),
        ("p6", "p2", 4.0),
        ("p8", "p7", 5.0),
        ("p9", "p10", 6.0),
    ]
    mentions = [(f"f{i}", key) for i, key in enumerate(sorted(PLACES))]
    files = [
        ("Place", put_csv("ent/places.csv", "id,name", [f'{k},"{v}"' for k, v in PLACES.items()])),
        ("Filing", put_csv("ent/filings.csv", "id", [f for f, _ in mentions])),
        ("Near", put_csv("ent/near.csv", "from,to,km", [f"{a},{b},{km}" for a, b, km in near])),
        ("Mentions", put_csv("ent/mentions.csv", "from,to", [f"{f},{p}" for f, p in mentions])),
    ]
    client(node).load("ent", "seed", BUCKET, files)
    count = "MATCH ()-[r]->() RETURN count(*), sum(CASE WHEN label(r) = 'Near' THEN r.km ELSE 0.0 END)"
    before = answers(node, "ent", count)

    outcome = run_operation(
        operation("resolve_entities"), {"graph_id": "ent", "node_table": "Place"}, resources=resources
    )
    assert outcome.result["clusters"] == 4 and outcome.result["merged"] == 5
    places = dict(answers(node, "ent", "MATCH (p:Place) RETURN p.name, p.aliases ORDER BY p.name"))
    assert places == {
        "ACME Corporation": json.dumps(["Acme Corp"]),
        "Globex": None,
        "Initech, Inc.": json.dumps(["Initech"]),
        "New York City": json.dumps(["NYC", "New York"]),
        "Boston": json.dumps(["Bostn"]),
    }
    assert answers(node, "ent", count) == before  # every relationship is still there, properties too
    assert answers(
        node, "ent", "MATCH (:Filing)-[:Mentions]->(p:Place {name: 'New York City'}) RETURN count(*)"
    ) == [[3]]
    audit = conn.execute(
        "SELECT canonical_name, merged_name, rule, score FROM entity_merges "
        "WHERE graph_id = 'ent' ORDER BY merged_name"
    ).fetchall()
    assert audit == [
        ("ACME Corporation", "Acme Corp", "exact", 1.0),
        ("Boston", "Bostn", "similar", pytest.approx(0.9091, abs=1e-4)),
        ("Initech, Inc.", "Initech", "exact", 1.0),
        ("New York City", "NYC", "acronym", 0.95),
        ("New York City", "New York", "token_subset", 0.9),
    ]
    again = run_operation(
        operation("resolve_entities"),
        {"graph_id": "ent", "node_table": "Place"},
        resources=resources,
        operation_id="again",
    )
    assert again.result["merged"] == 0 and answers(node, "ent", count) == before  # nothing left to merge
