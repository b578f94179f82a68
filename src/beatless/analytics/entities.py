"""`resolve_entities`: duplicate entities of a node table found by their names and merged
into one canonical node each, with an audit of every merge.

Names are compared normalized (case folded, punctuation dropped, spaces collapsed, a
trailing corporate suffix such as "Inc" or "Corporation" dropped). Two names match by:

- `exact` (1.0): the normalized names are equal ("Acme Corp" = "ACME Corporation");
- `acronym` (0.95): one is a single word equal to the other's initials ("NYC" = "New York City");
- `token_subset` (0.9): the words of one (at least two) are all words of the other
  ("New York" in "New York City");
- `similar` (the ratio): difflib's similarity ratio of the normalized names, compared within
  names sharing a first letter.

Matches at or above the threshold join clusters (union-find). Each cluster keeps the node
with the longest name (ties: the smallest key) and merges the others into it: the node
recreates every relationship of a merged node on the kept one and deletes the merged node,
in one transaction (`POST /databases/{id}/merge`), and the kept node's aliases (a JSON
list in its `aliases` property) name what it absorbed. Every merge is recorded in the
`entity_merges` table (what, into what, the rule and the score), so it can be reviewed.
A rerun finds nothing more to merge.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from beatless.errors import InvalidInputError
from beatless.graphs.operations import graph_size_gib, placed_node
from beatless.graphs.schema import GraphSchema, NodeTable
from beatless.operations.runtime import Operation

SUFFIXES = {"inc", "incorporated", "corp", "corporation", "co", "company", "ltd", "limited", "llc", "plc"}
FUZZY_BLOCK_LIMIT = 2_000  # names sharing a first letter compared pairwise only up to this many
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize(name: str) -> str:
    words = _PUNCTUATION.sub(" ", name.casefold()).split()
    while len(words) > 1 and words[-1] in SUFFIXES:
        words.pop()
    return " ".join(words)


def match(a: str, b: str, threshold: float) -> tuple[str, float] | None:
    """The rule and score by which normalized names `a` and `b` match, or None."""
    if not a or not b:
        return None
    if a == b:
        return "exact", 1.0
    wa, wb = a.split(), b.split()
    for one, many in ((wa, wb), (wb, wa)):
        if len(one) == 1 and len(many) >= 2 and len(one[0]) >= 2 and one[0] == "".join(w[0] for w in many):
            return "acronym", 0.95
    short, long = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
    if len(short) >= 2 and set(short) <= set(long):
        return "token_subset", 0.9
    if a[0] == b[0]:
        ratio = difflib.SequenceMatcher(None, a, b).ratio()
        if ratio >= threshold:
            return "similar", round(ratio, 4)
    return None


def _candidates(normalized: dict[Any, str]) -> list[tuple[Any, Any]]:
    """The pairs worth comparing: equal names, a single word against the initials of longer
    names, and every pair sharing a first letter (up to `FUZZY_BLOCK_LIMIT` names a letter)."""
    by_name: dict[str, list[Any]] = defaultdict(list)
    by_initials: dict[str, list[Any]] = defaultdict(list)
    by_letter: dict[str, list[Any]] = defaultdict(list)
    for key, text in normalized.items():
        if text:
            by_name[text].append(key)
            by_letter[text[0]].append(key)
            if " " in text:
                by_initials["".join(w[0] for w in text.split())].append(key)
    found = [(keys[0], other) for keys in by_name.values() for other in keys[1:]]
    found += [(key, other) for key, text in normalized.items() if text and " " not in text
              for other in by_initials.get(text, [])]  # fmt: skip
    for keys in by_letter.values():
        if len(keys) <= FUZZY_BLOCK_LIMIT:
            found += [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    return found


def clusters(
    names: dict[Any, str], threshold: float
) -> tuple[list[list[Any]], dict[tuple[Any, Any], tuple[str, float]]]:
    """Groups of keys whose names match (each of at least two), and every matching pair."""
    normalized = {key: normalize(name) for key, name in names.items()}
    parent: dict[Any, Any] = {key: key for key in names}

    def find(key: Any) -> Any:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    pairs: dict[tuple[Any, Any], tuple[str, float]] = {}
    for a, b in _candidates(normalized):
        if (a, b) in pairs or (b, a) in pairs:
            continue
        found = match(normalized[a], normalized[b], threshold)
        if found is not None and found[1] >= threshold:
            pairs[(a, b)] = found
            parent[find(a)] = find(b)
    groups: dict[Any, list[Any]] = defaultdict(list)
    for key in names:
        groups[find(key)].append(key)
    return [sorted(g, key=str) for g in groups.values() if len(g) > 1], pairs


def resolve_entities(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    resources = op.resources
    graph_id, table_name, name_property = params["graph_id"], params["node_table"], params["name_property"]
    _graph, node = placed_node(resources, graph_id)
    schema = GraphSchema.parse(node.request("GET", f"/databases/{graph_id}")["schema"])
    table = schema.table(table_name)
    if not isinstance(table, NodeTable):
        raise InvalidInputError("params.node_table", f"graph {graph_id!r} has no node table {table_name!r}")
    if table.properties.get(name_property) != "STRING":
        raise InvalidInputError(
            "params.name_property", f"{table_name}.{name_property} is not a STRING property"
        )
    work = Path(tempfile.mkdtemp(prefix="beatless-entities-", dir=resources.work_dir()))
    try:
        op.stage("export", 5, f"exporting {table_name}")
        bucket = resources.staging_bucket()
        exported = node.export(
            graph_id, bucket, f"analytics/{op.operation_id.replace(':', '-')}/", [table_name]
        )
        (item,) = exported["files"]
        local = work / "nodes.parquet"
        resources.s3().download_file(bucket, item["key"], str(local))
        import pyarrow.parquet as pq

        rows = pq.read_table(local, columns=[table.primary_key, name_property]).to_pylist()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = {row[table.primary_key]: row[name_property] or "" for row in rows}
    op.stage("match", 30, f"comparing {len(names):,} names")
    groups, pairs = clusters(names, params["threshold"])
    merges, aliases, audit = [], [], []
    for group in groups:
        keep = max(group, key=lambda k: (len(names[k]), -_order(group, k)))
        merged = [k for k in group if k != keep]
        merges.append({"keep": keep, "merged": merged})
        aliases.append({"keep": keep, "names": json.dumps(sorted({names[k] for k in merged}))})
        for k in merged:
            rule, score = _best(pairs, k)
            audit.append((str(keep), names[keep], str(k), names[k], rule, score))
    op.stage("merge", 70, f"merging {sum(len(m['merged']) for m in merges)} node(s) into {len(merges)}")
    moved = {"merged": 0, "relationships_moved": 0}
    if merges:
        moved = node.merge(graph_id, table_name, merges, aliases, params["aliases_property"])
        _record(resources.database(), op.operation_id, graph_id, table_name, audit)
    return {
        "node_table": table_name,
        "entities": len(names),
        "clusters": len(merges),
        "merged": moved["merged"],
        "relationships_moved": moved["relationships_moved"],
        "audited": len(audit),
        "units": graph_size_gib(resources, {"graph_id": graph_id}),
    }


def _order(group: list[Any], key: Any) -> int:
    return sorted(group, key=str).index(key)


def _best(pairs: dict[tuple[Any, Any], tuple[str, float]], key: Any) -> tuple[str, float]:
    found = [found for (a, b), found in pairs.items() if key in (a, b)]
    return max(found, key=lambda f: f[1])


def _record(conn: Any, operation_id: str, graph_id: str, table: str, audit: list[tuple[Any, ...]]) -> None:
    with conn.transaction():
        for canonical_key, canonical_name, merged_key, merged_name, rule, score in audit:
            conn.execute(
                "INSERT INTO entity_merges (operation_id, graph_id, node_table, canonical_key, "
                "canonical_name, merged_key, merged_name, rule, score) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    operation_id,
                    graph_id,
                    table,
                    canonical_key,
                    canonical_name,
                    merged_key,
                    merged_name,
                    rule,
                    score,
                ),
            )
