"""The databases one graph node hosts: LadybugDB files under the data directory.

Layout: `<data_dir>/<graph_id>/graph.lbdb` (+ the engine's `.wal`), the journal of
bulk loads `<data_dir>/<graph_id>/loads/<load_id>.json`, and scratch space
`<data_dir>/.staging/`. Only this process opens the files (a second process
would see a frozen snapshot, and a second writer fails on the file lock).

- Every open database has a bounded buffer pool and the node's size cap
  (`max_db_size`), and at most `max_open_databases` stay open: the least
  recently used idle one is closed first.
- One writer per database: creating, loading, backing up, restoring and
  deleting take the database's lock; a second load while one runs is refused
  (`BusyError`), reads go on meanwhile.
- Queries run in `BEGIN TRANSACTION READ ONLY` after `beatless.graphs.cypher`
  checked them, with a row limit and a time limit.
- A load that could take a database past its cap is refused before it starts
  (`SizeCapError`): the engine's own overflow "commits", then loses the data
  on reopen. Its projected size is the file's size plus each input file's size
  times `EXPANSION` (what the engine took at most per input byte here, with a margin).
- A load is idempotent per `load_id`: each file COPYed is recorded in the load's
  journal (the file in progress with its table's row count before it, so a COPY
  that committed just before a crash is recognised), so a load cut short (a
  killed node) is retried to completion without a file twice. A file whose
  columns do not match its table is refused before any file is copied.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

import ladybug

from beatless.db.arguments import check_id
from beatless.errors import BeatlessError, InvalidInputError
from beatless.graphs.cypher import check_read_only
from beatless.graphs.node import backup
from beatless.graphs.node.settings import NodeSettings
from beatless.graphs.schema import GraphSchema, NodeTable, RelTable

DATABASE_FILE = "graph.lbdb"
STAGING = ".staging"
FORMATS = {"parquet": ".parquet", "csv": ".csv"}
# Bytes the database grows by per input byte, at most (Parquet is compressed; CSV is text).
EXPANSION = {"parquet": 6.0, "csv": 3.0}
SIZE_MARGIN_BYTES = 64 * 2**20


class NotFoundError(BeatlessError):
    """No such graph on this node."""


class ExistsError(BeatlessError):
    """The graph exists already."""


class BusyError(BeatlessError):
    """Another load (or backup, restore, delete) of this graph is running."""


class SizeCapError(BeatlessError):
    """The operation could take the database past its size cap."""


@dataclass
class _Open:
    database: ladybug.Database
    users: int = 0


@dataclass(frozen=True)
class LoadFile:
    table: str
    name: str  # where it comes from (the S3 key): in errors and in the load's journal
    format: str  # parquet | csv
    size: int  # its size, known before it is fetched (for the size cap)


Fetch = Callable[[LoadFile, Path], None]  # write the file's bytes to the local path


@dataclass
class _Graph:
    lock: threading.Lock = field(default_factory=threading.Lock)


class DatabaseHost:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.root = settings.data_dir
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / STAGING).mkdir(exist_ok=True)
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._graphs: dict[str, _Graph] = {}
        self._lock = threading.Lock()

    # -- inventory (no database opened) --------------------------------------------------

    def graph_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / DATABASE_FILE).exists())

    def exists(self, graph_id: str) -> bool:
        return (self._dir(graph_id) / DATABASE_FILE).exists()

    def size(self, graph_id: str) -> int:
        """Bytes the database occupies on disk (its file and write-ahead log)."""
        folder = self._dir(graph_id)
        return sum(p.stat().st_blocks * 512 for p in folder.glob(f"{DATABASE_FILE}*") if p.is_file())

    def disk(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.root)
        return usage.total - usage.free, usage.total

    # -- lifecycle -------------------------------------------------------------------------

    def create(self, graph_id: str, schema: GraphSchema) -> None:
        check_id("graph_id", graph_id)
        with self._writing(graph_id, wait=True):
            if self.exists(graph_id):
                raise ExistsError(f"graph {graph_id!r} exists on this node")
            folder = self._dir(graph_id)
            folder.mkdir(exist_ok=True)
            try:
                with self._connection(graph_id, create=True) as conn:
                    for statement in schema.ddl():
                        conn.execute(statement)
                    conn.execute("CHECKPOINT")
            except BaseException:
                self._close(graph_id)
                shutil.rmtree(folder, ignore_errors=True)
                raise

    def delete(self, graph_id: str) -> None:
        with self._writing(graph_id, wait=True):
            self._require(graph_id)
            self._close(graph_id)
            shutil.rmtree(self._dir(graph_id))

    def close_all(self) -> None:
        with self._lock:
            for graph_id in list(self._open):
                self._open.pop(graph_id).database.close()

    # -- reads -------------------------------------------------------------------------------

    def query(
        self, graph_id: str, query: str, parameters: Mapping[str, Any], *, limit: int, timeout_ms: int
    ) -> dict[str, Any]:
        text = check_read_only(query)
        self._require(graph_id)
        with self._connection(graph_id) as conn:
            conn.set_query_timeout(timeout_ms)
            conn.execute("BEGIN TRANSACTION READ ONLY")
            try:
                try:
                    result = conn.execute(text, dict(parameters))
                except RuntimeError as error:
                    raise InvalidInputError("query", str(error)) from None
                assert isinstance(result, ladybug.QueryResult)
                columns = result.get_column_names()
                rows: list[list[Any]] = []
                while result.has_next() and len(rows) < limit:
                    rows.append([_json(value) for value in result.get_next()])
                truncated = result.has_next()
                types = result.get_column_data_types()
            finally:
                with contextlib.suppress(RuntimeError):  # a refused statement ended the transaction
                    conn.execute("ROLLBACK")
        return {"columns": columns, "types": types, "rows": rows, "truncated": truncated}

    def tables(self, graph_id: str) -> dict[str, dict[str, Any]]:
        """Each table: its kind and its columns in load order (rel tables: from, to, properties)."""
        self._require(graph_id)
        found: dict[str, dict[str, Any]] = {}
        with self._connection(graph_id) as conn:
            for name, kind in _rows(conn, "CALL show_tables() RETURN name, type"):
                info = list(_rows(conn, f"CALL table_info('{name}') RETURN *"))
                columns = [str(row[1]) for row in info]
                found[str(name)] = {
                    "kind": str(kind).lower(),
                    "columns": ["from", "to", *columns] if str(kind).upper() == "REL" else columns,
                    "rows": int(_count(conn, str(name), str(kind))),
                }
        return found

    # -- writes ------------------------------------------------------------------------------

    def load(
        self, graph_id: str, load_id: str, files: Sequence[LoadFile], fetch: Fetch, *, atomic: bool = False
    ) -> dict[str, Any]:
        """COPY each file into its table, once per `load_id` (see the module docstring):
        tables and the size cap checked first, then every file fetched and its columns
        checked, then the COPYs. `atomic`: all or nothing — the database as it was before
        the load's first COPY is kept aside (CHECKPOINT, sparse copy) and put back if a COPY
        fails; a load cut short by a crash resumes from its journal, and still rolls back to
        that point if a later COPY fails."""
        check_id("load_id", load_id)
        if not files:
            raise InvalidInputError("files", "must name at least one file")
        with self._writing(graph_id, wait=False):
            self._require(graph_id)
            tables = self.tables(graph_id)
            for i, item in enumerate(files):
                self._check_table(tables, item, f"files[{i}]")
            self._check_cap(graph_id, files)
            staging = self.staging_dir()
            try:
                local = []
                for i, item in enumerate(files):
                    path = staging / f"{i}{FORMATS[item.format]}"
                    fetch(item, path)
                    self._check_columns(tables[item.table], item, path, f"files[{i}]")
                    local.append(path)
                return self._copy(graph_id, load_id, files, local, atomic=atomic)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _copy(
        self, graph_id: str, load_id: str, files: Sequence[LoadFile], local: Sequence[Path], *, atomic: bool
    ) -> dict[str, Any]:
        snapshot = self._dir(graph_id) / "loads" / f"{load_id}.snapshot"
        journal = self._dir(graph_id) / "loads" / f"{load_id}.json"
        if atomic and not journal.exists():  # the load's first attempt: the point to go back to
            self._snapshot(graph_id, snapshot)
        try:
            result = self._copy_journaled(graph_id, load_id, files, local)
        except InvalidInputError:
            if atomic and snapshot.exists():  # (a load id begun without `atomic` has no point to go back to)
                self._roll_back(graph_id, snapshot, journal)
            raise
        snapshot.unlink(missing_ok=True)
        return result

    def _snapshot(self, graph_id: str, snapshot: Path) -> None:
        with self._connection(graph_id) as conn:
            conn.execute("CHECKPOINT")
        snapshot.parent.mkdir(exist_ok=True)
        backup.copy_sparse(self._dir(graph_id) / DATABASE_FILE, snapshot)

    def _roll_back(self, graph_id: str, snapshot: Path, journal: Path) -> None:
        """The database as it was before the load (its WAL discarded with the load's writes)."""
        self._close(graph_id)
        folder = self._dir(graph_id)
        for stale in folder.glob(f"{DATABASE_FILE}.*"):
            stale.unlink()
        snapshot.replace(folder / DATABASE_FILE)
        journal.unlink(missing_ok=True)

    def _copy_journaled(
        self, graph_id: str, load_id: str, files: Sequence[LoadFile], local: Sequence[Path]
    ) -> dict[str, Any]:
        # The journal says which files are in. A COPY commits before the journal can say so:
        # the file being copied is noted first with its table's row count, and a retry that
        # finds more rows than that knows the COPY committed (one load runs at a time).
        journal = self._dir(graph_id) / "loads" / f"{load_id}.json"
        fresh: dict[str, Any] = {"load_id": load_id, "done": []}
        state: dict[str, Any] = json.loads(journal.read_text()) if journal.exists() else fresh
        done: list[str] = state["done"]
        started = state.get("started")
        committed = (
            started is not None
            and started["name"] not in done
            and self.tables(graph_id)[started["table"]]["rows"] > started["rows_before"]
        )
        if committed and started is not None:
            done.append(started["name"])
        skipped = [f.name for f in files if f.name in done]
        with self._connection(graph_id) as conn:
            for i, (item, path) in enumerate(zip(files, local, strict=True)):
                if item.name in done:
                    continue
                rows_before = self.tables(graph_id)[item.table]["rows"]
                state["started"] = {"name": item.name, "table": item.table, "rows_before": rows_before}
                _write_atomically(journal, state)
                options = " (header=true)" if item.format == "csv" else ""
                try:
                    conn.execute(f"COPY `{item.table}` FROM '{path}'{options}")
                except RuntimeError as error:
                    raise InvalidInputError(f"files[{i}]", f"{item.name}: {error}") from None
                done.append(item.name)
                state["started"] = None
                _write_atomically(journal, state)
        counts = {name: info["rows"] for name, info in self.tables(graph_id).items()}
        return {"load_id": load_id, "copied": len(files) - len(skipped), "skipped": skipped, "rows": counts}

    def set_property(
        self, graph_id: str, table: str, prop: str, kind: str, path: Path, fetch: Callable[[Path], None]
    ) -> dict[str, Any]:
        """Set `prop` (added to node table `table` as `kind` if it is new) of the rows whose
        primary key is a `key` of the Parquet file `path` to its `value` (one LOAD FROM ...
        SET, the way analytics write results back: by bulk, never per node)."""
        from beatless.graphs.schema import TYPES

        _identifier("property", prop)
        if kind not in TYPES:
            raise InvalidInputError("type", f"must be one of {', '.join(TYPES)}, got {kind!r}")
        with self._writing(graph_id, wait=False):
            schema = self.schema(graph_id)
            node = schema.table(table)
            if not isinstance(node, NodeTable):
                raise InvalidInputError("table", f"no node table {table!r} in graph {graph_id!r}")
            if prop in node.properties and node.properties[prop] != kind:
                raise InvalidInputError("type", f"{table}.{prop} is {node.properties[prop]}, not {kind}")
            if prop == node.primary_key:
                raise InvalidInputError("property", f"{prop!r} is {table}'s primary key")
            fetch(path)
            if _file_columns(path, "parquet", "key") != ["key", "value"]:
                raise InvalidInputError("key", "the file's columns must be exactly key, value")
            self._check_cap(graph_id, [LoadFile(table, "values", "parquet", path.stat().st_size)])
            with self._connection(graph_id) as conn:
                if prop not in node.properties:
                    conn.execute(f"ALTER TABLE `{table}` ADD `{prop}` {kind}")
                try:
                    updated = _first(
                        conn.execute(
                            f"LOAD FROM '{path}' MATCH (n:`{table}`) WHERE n.`{node.primary_key}` = key "
                            f"SET n.`{prop}` = value RETURN count(*)"
                        )
                    )
                except RuntimeError as error:
                    raise InvalidInputError(
                        "key", f"cannot set {table}.{prop} from the file: {error}"
                    ) from None
        return {"table": table, "property": prop, "type": kind, "updated": int(updated)}

    def merge_nodes(
        self,
        graph_id: str,
        table: str,
        merges: Sequence[Mapping[str, Any]],
        aliases_property: str,
        aliases: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        """Merge nodes of `table` into others, in one write transaction: for each
        `{"keep": key, "merged": [keys]}` every relationship of a merged node is recreated on
        the kept node (properties copied; outgoing first, then incoming, so one between two
        merged nodes survives once), the merged nodes are deleted, and the kept node's
        `aliases_property` (STRING, added if new) is set from `aliases` (`{"keep", "names"}`)."""
        _identifier("aliases_property", aliases_property)
        with self._writing(graph_id, wait=False):
            schema = self.schema(graph_id)
            node = schema.table(table)
            if not isinstance(node, NodeTable):
                raise InvalidInputError("table", f"no node table {table!r} in graph {graph_id!r}")
            if aliases_property in node.properties and node.properties[aliases_property] != "STRING":
                raise InvalidInputError("aliases_property", f"{table}.{aliases_property} is not a STRING")
            pairs = [{"merged": m, "keep": item["keep"]} for item in merges for m in item["merged"]]
            key = node.primary_key
            moved = 0
            with self._connection(graph_id) as conn:
                if aliases_property not in node.properties:
                    conn.execute(f"ALTER TABLE `{table}` ADD `{aliases_property}` STRING")
                conn.execute("BEGIN TRANSACTION")
                try:
                    for rel in schema.relationships:  # outgoing edges of merged nodes first
                        if rel.source == table:
                            moved += self._repoint(conn, rel, key, pairs, outgoing=True)
                    for rel in schema.relationships:
                        if rel.target == table:
                            moved += self._repoint(conn, rel, key, pairs, outgoing=False)
                    deleted = _first(
                        conn.execute(
                            f"UNWIND $pairs AS p MATCH (m:`{table}`) WHERE m.`{key}` = p.merged "
                            "DETACH DELETE m RETURN count(*)",
                            {"pairs": pairs},
                        )
                    )
                    values = [{"keep": a["keep"], "names": a["names"]} for a in aliases]
                    conn.execute(
                        f"UNWIND $values AS a MATCH (k:`{table}`) WHERE k.`{key}` = a.keep "
                        f"SET k.`{aliases_property}` = a.names",
                        {"values": values},
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(RuntimeError):
                        conn.execute("ROLLBACK")
                    raise
        return {"merged": int(deleted), "relationships_moved": moved}

    @staticmethod
    def _repoint(
        conn: ladybug.Connection, rel: RelTable, key: str, pairs: list[dict[str, Any]], *, outgoing: bool
    ) -> int:
        props = ", ".join(f"`{p}`: r.`{p}`" for p in rel.properties)
        props = f" {{{props}}}" if props else ""
        if outgoing:
            pattern = f"(m:`{rel.source}`)-[r:`{rel.name}`]->(x:`{rel.target}`), (k:`{rel.source}`)"
            create = f"(k)-[:`{rel.name}`{props}]->(x)"
        else:
            pattern = f"(x:`{rel.source}`)-[r:`{rel.name}`]->(m:`{rel.target}`), (k:`{rel.target}`)"
            create = f"(x)-[:`{rel.name}`{props}]->(k)"
        statement = (
            f"UNWIND $pairs AS p MATCH {pattern} WHERE m.`{key}` = p.merged AND k.`{key}` = p.keep "
            f"CREATE {create} RETURN count(*)"
        )
        return int(_first(conn.execute(statement, {"pairs": pairs})))

    def backup(self, graph_id: str, archive: Path) -> backup.Packed:
        """A consistent archive: writes held, CHECKPOINT, no WAL or shadow file left, then packed."""
        with self._writing(graph_id, wait=True):
            self._require(graph_id)
            with self._connection(graph_id) as conn:
                conn.execute("CHECKPOINT")
            folder = self._dir(graph_id)
            leftovers = [
                p.name
                for p in folder.iterdir()
                if p.name != DATABASE_FILE and p.name.startswith(DATABASE_FILE) and p.stat().st_size > 0
            ]
            if leftovers:
                raise BeatlessError(f"graph {graph_id!r} has {leftovers} after CHECKPOINT: not backed up")
            return backup.pack(folder / DATABASE_FILE, archive)

    def restore(self, graph_id: str, archive: Path | Callable[[], BinaryIO], *, sha256: str) -> int:
        """Replace (or create) the graph's database from an archive — a file, or a function
        that opens a stream (an S3 body), called once the writer lock is held — after it
        verified against `sha256`; opens it to check."""
        check_id("graph_id", graph_id)
        with self._writing(graph_id, wait=True):
            folder = self._dir(graph_id)
            folder.mkdir(exist_ok=True)
            incoming = folder / f"{DATABASE_FILE}.restoring"
            try:
                if isinstance(archive, Path):
                    size = backup.unpack(archive, incoming, expected_sha256=sha256)
                else:
                    with contextlib.closing(archive()) as stream:
                        size = backup.unpack_stream(stream, incoming, expected_sha256=sha256)
            except BaseException:
                incoming.unlink(missing_ok=True)
                if not (folder / DATABASE_FILE).exists():
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            self._close(graph_id)
            for stale in folder.glob(f"{DATABASE_FILE}.*"):
                if stale != incoming:
                    stale.unlink()
            incoming.replace(folder / DATABASE_FILE)
            with self._connection(graph_id) as conn:
                conn.execute("CALL show_tables() RETURN *")
            return size

    def schema(self, graph_id: str) -> GraphSchema:
        """The graph's schema as the engine's catalog has it."""
        self._require(graph_id)
        nodes: list[NodeTable] = []
        rels: list[RelTable] = []
        with self._connection(graph_id) as conn:
            for name, kind in _rows(conn, "CALL show_tables() RETURN name, type"):
                info = list(_rows(conn, f"CALL table_info('{name}') RETURN *"))
                properties = {str(row[1]): str(row[2]) for row in info}
                if str(kind).upper() == "REL":
                    source, target = next(_rows(conn, f"CALL show_connection('{name}') RETURN *"))[:2]
                    rels.append(RelTable(str(name), str(source), str(target), properties))
                else:
                    key = next(str(row[1]) for row in info if row[4] is True)
                    nodes.append(NodeTable(str(name), key, properties))
        return GraphSchema(tuple(nodes), tuple(rels))

    def export(
        self, graph_id: str, tables: Sequence[str], filters: Mapping[str, Mapping[str, Any]], out: Path
    ) -> tuple[GraphSchema, list[dict[str, Any]]]:
        """`tables` of the graph, each written by the engine's `COPY (...) TO` a Parquet file in
        `out`, in load order, with writes held for one consistent cut. `filters` keeps the rows
        of a node table whose properties equal the given values; a relationship is kept when
        both its ends are. Returns the subset's schema and `[{"table", "path", "rows"}]`."""
        with self._writing(graph_id, wait=True):
            full = self.schema(graph_id)
            subset = _subset(full, tables, filters)
            exported: list[dict[str, Any]] = []
            with self._connection(graph_id) as conn:
                for node in subset.nodes:
                    where, params = _equalities("n", filters.get(node.name, {}), "n")
                    columns = ", ".join(f"n.`{c}` AS `{c}`" for c in node.properties)
                    match = f"MATCH (n:`{node.name}`){where}"
                    exported.append(self._copy_out(conn, node.name, match, columns, params, out))
                for rel in subset.relationships:
                    source = next(n for n in subset.nodes if n.name == rel.source)
                    target = next(n for n in subset.nodes if n.name == rel.target)
                    a_where, a_params = _equalities("a", filters.get(rel.source, {}), "a")
                    b_where, b_params = _equalities("b", filters.get(rel.target, {}), "b")
                    conditions = " AND ".join(w.removeprefix(" WHERE ") for w in (a_where, b_where) if w)
                    match = f"MATCH (a:`{rel.source}`)-[r:`{rel.name}`]->(b:`{rel.target}`)"
                    match += f" WHERE {conditions}" if conditions else ""
                    columns = ", ".join(
                        [f"a.`{source.primary_key}` AS `from`", f"b.`{target.primary_key}` AS `to`"]
                        + [f"r.`{c}` AS `{c}`" for c in rel.properties]
                    )
                    exported.append(self._copy_out(conn, rel.name, match, columns, a_params | b_params, out))
        return subset, exported

    @staticmethod
    def _copy_out(
        conn: ladybug.Connection, table: str, match: str, columns: str, params: dict[str, Any], out: Path
    ) -> dict[str, Any]:
        path = out / f"{table}.parquet"
        conn.execute(f"COPY ({match} RETURN {columns}) TO '{path}'", params)
        rows = int(_first(conn.execute(f"{match} RETURN count(*)", params)))
        return {"table": table, "path": path, "rows": rows}

    def staging_dir(self) -> Path:
        path = self.root / STAGING / uuid.uuid4().hex
        path.mkdir()
        return path

    # -- checks ------------------------------------------------------------------------------

    def _check_table(self, tables: Mapping[str, Mapping[str, Any]], item: LoadFile, field: str) -> None:
        if item.format not in FORMATS:
            raise InvalidInputError(
                f"{field}.format", f"must be one of {', '.join(FORMATS)}, got {item.format!r}"
            )
        if item.table not in tables:
            raise InvalidInputError(
                f"{field}.table", f"no table {item.table!r} (tables: {', '.join(tables)})"
            )

    def _check_columns(self, table: Mapping[str, Any], item: LoadFile, path: Path, field: str) -> None:
        found = _file_columns(path, item.format, item.name)
        expected = list(table["columns"])
        rel = table["kind"] == "rel"  # a rel file's first two columns are its ends, whatever their names
        comparable, wanted = (found[2:], expected[2:]) if rel else (found, expected)
        if len(found) != len(expected) or [c.lower() for c in comparable] != [c.lower() for c in wanted]:
            raise InvalidInputError(
                f"{field}.columns", f"{item.name} has columns {found}; table {item.table} takes {expected}"
            )

    def _check_cap(self, graph_id: str, files: Sequence[LoadFile]) -> None:
        current = self.size(graph_id)
        growth = sum(int(f.size * EXPANSION[f.format]) for f in files)
        projected = current + growth + SIZE_MARGIN_BYTES
        if projected > self.settings.max_db_size_bytes:
            raise SizeCapError(
                f"loading {len(files)} file(s) could take graph {graph_id!r} to {projected:,} bytes, "
                f"past its size cap of {self.settings.max_db_size_bytes:,} bytes (now {current:,}); "
                "nothing was loaded"
            )

    def _require(self, graph_id: str) -> None:
        check_id("graph_id", graph_id)
        if not self.exists(graph_id):
            raise NotFoundError(f"no graph {graph_id!r} on this node")

    # -- plumbing ----------------------------------------------------------------------------

    def _dir(self, graph_id: str) -> Path:
        return self.root / graph_id

    @contextlib.contextmanager
    def _writing(self, graph_id: str, *, wait: bool) -> Iterator[None]:
        with self._lock:
            graph = self._graphs.setdefault(graph_id, _Graph())
        if not graph.lock.acquire(blocking=wait):
            raise BusyError(f"graph {graph_id!r} is being written (a load, backup, restore or delete runs)")
        try:
            yield
        finally:
            graph.lock.release()

    @contextlib.contextmanager
    def _connection(self, graph_id: str, *, create: bool = False) -> Iterator[ladybug.Connection]:
        database = self._acquire(graph_id, create=create)
        conn = ladybug.Connection(database, num_threads=self.settings.threads)
        try:
            yield conn
        finally:
            conn.close()
            self._release(graph_id)

    def _acquire(self, graph_id: str, *, create: bool) -> ladybug.Database:
        with self._lock:
            entry = self._open.get(graph_id)
            if entry is None:
                path = self._dir(graph_id) / DATABASE_FILE
                if not create and not path.exists():
                    raise NotFoundError(f"no graph {graph_id!r} on this node")
                entry = _Open(
                    ladybug.Database(
                        str(path),
                        buffer_pool_size=self.settings.buffer_pool_bytes,
                        max_db_size=self.settings.max_db_size_bytes,
                        max_num_threads=self.settings.threads,
                    )
                )
                self._open[graph_id] = entry
                self._evict()
            self._open.move_to_end(graph_id)
            entry.users += 1
            return entry.database

    def _release(self, graph_id: str) -> None:
        with self._lock:
            entry = self._open.get(graph_id)
            if entry is not None:
                entry.users -= 1
            self._evict()

    def _evict(self) -> None:
        while len(self._open) > self.settings.max_open_databases:
            idle = next((gid for gid, e in self._open.items() if e.users == 0), None)
            if idle is None:
                return  # everything open is in use: over the limit until one is released
            self._open.pop(idle).database.close()

    def _close(self, graph_id: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            with self._lock:
                entry = self._open.get(graph_id)
                if entry is None:
                    return
                if entry.users == 0:
                    self._open.pop(graph_id).database.close()
                    return
            if time.monotonic() > deadline:
                raise BusyError(f"graph {graph_id!r} stayed in use for 30 s")
            time.sleep(0.05)

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self._open)


def _rows(conn: ladybug.Connection, query: str) -> Iterator[list[Any]]:
    result = conn.execute(query)
    assert isinstance(result, ladybug.QueryResult)
    while result.has_next():
        row = result.get_next()
        yield list(row.values()) if isinstance(row, dict) else list(row)


def _count(conn: ladybug.Connection, name: str, kind: str) -> int:
    pattern = f"()-[x:`{name}`]->()" if kind.upper() == "REL" else f"(x:`{name}`)"
    return int(next(_rows(conn, f"MATCH {pattern} RETURN count(*)"))[0])


def _file_columns(path: Path, format: str, name: str) -> list[str]:
    """The column names of a Parquet file, or a CSV file's header line."""
    if format == "csv":
        with path.open(encoding="utf-8", errors="replace") as handle:
            header = handle.readline().rstrip("\r\n")
        return [c.strip().strip('"') for c in header.split(",")] if header else []
    # A throwaway in-memory database reads the Parquet schema without touching any graph.
    scratch = ladybug.Database(None, buffer_pool_size=16 * 2**20)
    try:
        conn = ladybug.Connection(scratch)
        result = conn.execute(f"LOAD FROM '{path}' RETURN * LIMIT 0")
        assert isinstance(result, ladybug.QueryResult)
        names = [str(c) for c in result.get_column_names()]
        conn.close()
        return names
    except RuntimeError as error:
        raise InvalidInputError(name, f"is not a readable Parquet file: {error}") from None
    finally:
        scratch.close()


def _write_atomically(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


def _json(value: Any) -> Any:
    """A query value as JSON: timestamps ISO 8601, intervals in seconds, bytes as hex."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _first(result: Any) -> Any:
    assert isinstance(result, ladybug.QueryResult)
    row = result.get_next()
    return (list(row.values()) if isinstance(row, dict) else list(row))[0]


def _subset(
    full: GraphSchema, tables: Sequence[str], filters: Mapping[str, Mapping[str, Any]]
) -> GraphSchema:
    """The tables asked for, checked: each exists, each relationship's ends are asked for too,
    each filter names a node table asked for and its properties, with scalar values."""
    if not isinstance(tables, list) or not tables:
        raise InvalidInputError("tables", "must be a non-empty list of table names")
    for i, name in enumerate(tables):
        if not isinstance(name, str) or full.table(name) is None:
            raise InvalidInputError(f"tables[{i}]", f"no table {name!r} in this graph")
    wanted = set(tables)
    for i, name in enumerate(tables):
        table = full.table(name)
        if isinstance(table, RelTable) and not {table.source, table.target} <= wanted:
            raise InvalidInputError(
                f"tables[{i}]", f"relationship {name!r} needs its ends {table.source!r} and {table.target!r}"
            )
    if not isinstance(filters, Mapping):
        raise InvalidInputError("filters", "must be an object of node table -> {property: value}")
    for name, equalities in filters.items():
        table = full.table(name)
        if not isinstance(table, NodeTable) or name not in wanted:
            raise InvalidInputError(f"filters.{name}", "must name a node table among `tables`")
        if not isinstance(equalities, Mapping) or not equalities:
            raise InvalidInputError(f"filters.{name}", "must be a non-empty object of property -> value")
        for prop, value in equalities.items():
            if prop not in table.properties:
                raise InvalidInputError(f"filters.{name}.{prop}", f"no property {prop!r} in {name!r}")
            if value is None or not isinstance(value, str | int | float | bool):
                raise InvalidInputError(
                    f"filters.{name}.{prop}", f"must be a string, number or boolean, got {value!r}"
                )
    return GraphSchema(
        tuple(t for t in full.nodes if t.name in wanted),
        tuple(t for t in full.relationships if t.name in wanted),
    )


def _equalities(var: str, equalities: Mapping[str, Any], prefix: str) -> tuple[str, dict[str, Any]]:
    """` WHERE var.p = $prefix_0 AND ...` and its parameters (values never enter the text)."""
    if not equalities:
        return "", {}
    params = {f"{prefix}_{i}": value for i, value in enumerate(equalities.values())}
    terms = [f"{var}.`{prop}` = ${prefix}_{i}" for i, prop in enumerate(equalities)]
    return " WHERE " + " AND ".join(terms), params


def _identifier(field: str, name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", name):
        raise InvalidInputError(
            field, f"must be a letter then letters, digits or _ (at most 63), got {name!r}"
        )
    return name
