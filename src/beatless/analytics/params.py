"""Parameters of the analytics operations (`beatless.operations.catalogue`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from beatless.graphs.params import GraphId, Params

Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,62}$")]


class DetectCommunitiesParams(Params):
    graph_id: GraphId
    node_table: Name = Field(description="the node table whose nodes are grouped")
    relationship_tables: list[Name] = Field(
        default_factory=list,
        description="relationships from node_table to itself that make the edges (default: all of them)",
    )
    property: Name = Field(default="community", description="where each node's community is stored")
    resolution: float = Field(default=1.0, gt=0, le=100, description="Louvain's resolution (gamma)")
    seed: int = Field(default=1, ge=0, le=2**31 - 1, description="the algorithm's random seed")


class ResolveEntitiesParams(Params):
    graph_id: GraphId
    node_table: Name = Field(description="the node table whose duplicates are merged")
    name_property: Name = Field(default="name", description="the STRING property names are compared on")
    threshold: float = Field(default=0.85, ge=0.5, le=1.0, description="the lowest score that merges")
    aliases_property: Name = Field(default="aliases", description="where a kept node lists what it absorbed")
