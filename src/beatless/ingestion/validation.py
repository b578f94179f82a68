"""Uploaded files checked against a graph's schema in DuckDB, before anything is loaded.

Every file is read as it is (CSV as text, so a bad value is seen as written; Parquet with
its own types) into a staging table with its row numbers (1 = the first data row), and
the rules below are checked over all files of a table together:

- `missing_column`, `extra_column`: the file's columns are not the table's (a node
  table: its properties; a relationship: `from`, `to`, its properties); the file's other
  rules are then not checked;
- `type`: a value that does not convert to its column's type (`TRY_CAST` of each value,
  never a typed `count(*)`, which skips the conversion);
- `null_primary_key`: a node row without its primary key;
- `duplicate_primary_key`: a key that appears more than once in the staged files of its
  table (every row of it is reported);
- `existing_primary_key`: a key the graph holds already;
- `null_endpoint`: a relationship row without `from` or `to`;
- `missing_endpoint`: a relationship end that is neither staged in this batch nor in the
  graph (an anti join: `NOT IN` finds nothing when a key is NULL).

A problem is `{file, row, column, value, rule}`; at most `limit_per_rule` of each rule are
listed (first by file, row, column), with every rule's total count. When no file has a
problem, each table's files are put in load form — typed, in the table's column order
(relationships: `from`, `to`, properties), what the node's bulk load takes: an uploaded
Parquet file that is in that form already is kept as it is (not rewritten), the others
of the table are written as one Parquet file. DuckDB works in a database file in the
work directory with a memory limit, so memory stays bounded whatever the batch's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from beatless.graphs.schema import GraphSchema, NodeTable, RelTable

# The engine's types as DuckDB spells them.
DUCK_TYPES = {
    "STRING": "VARCHAR",
    "BOOL": "BOOLEAN",
    "INT8": "TINYINT",
    "INT16": "SMALLINT",
    "INT32": "INTEGER",
    "INT64": "BIGINT",
    "INT128": "HUGEINT",
    "UINT8": "UTINYINT",
    "UINT16": "USMALLINT",
    "UINT32": "UINTEGER",
    "UINT64": "UBIGINT",
    "FLOAT": "FLOAT",
    "DOUBLE": "DOUBLE",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",
    "INTERVAL": "INTERVAL",
    "UUID": "UUID",
    "BLOB": "BLOB",
}
RULES = (
    "missing_column",
    "extra_column",
    "type",
    "null_primary_key",
    "duplicate_primary_key",
    "existing_primary_key",
    "null_endpoint",
    "missing_endpoint",
)
DEFAULT_LIMIT_PER_RULE = 20
ROW = "__row"


@dataclass(frozen=True)
class StagedFile:
    table: str
    name: str  # how reports call it (its S3 key)
    path: Path  # where it is on this machine
    format: str  # parquet | csv
    written: bool = False  # True: made by the validation (a table's rows in load form)


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    column: str | None
    value: str | None
    rule: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "rule": self.rule,
        }


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # every rule's total
    rows: dict[str, int] = field(default_factory=dict)  # staged rows per table
    # When valid: each table's files in load form — the clean Parquet written for it, and the
    # uploaded Parquet files that were in load form already (same columns, order and types).
    outputs: dict[str, list[StagedFile]] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "counts": {rule: n for rule, n in self.counts.items() if n},
            "problems": [p.as_dict() for p in self.problems],
            "rows": dict(self.rows),
        }


_AT = f"u.__file_index, u.__file, u.{ROW}"  # where a problem is, in a staged table `u`


def _not_a_type_problem(column: str) -> str:
    """A NULL that came from a value that did not convert is reported as `type` only."""
    return (
        f"NOT EXISTS (SELECT 1 FROM problems p WHERE p.file_index = u.__file_index "
        f"AND p.row = u.{ROW} AND p.col = {column} AND p.rule = 'type')"
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _s(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def expected_columns(table: NodeTable | RelTable) -> list[str]:
    return list(table.properties) if isinstance(table, NodeTable) else ["from", "to", *table.properties]


def column_types(schema: GraphSchema, table: NodeTable | RelTable) -> dict[str, str]:
    """Each column's DuckDB type (a relationship's ends: the key type of the tables they join)."""
    if isinstance(table, NodeTable):
        return {name: DUCK_TYPES[kind] for name, kind in table.properties.items()}
    ends = {n.name: n for n in schema.nodes}
    source, target = ends[table.source], ends[table.target]
    return {
        "from": DUCK_TYPES[source.properties[source.primary_key]],
        "to": DUCK_TYPES[target.properties[target.primary_key]],
        **{name: DUCK_TYPES[kind] for name, kind in table.properties.items()},
    }


class Validation:
    """One validation run: a DuckDB connection of its own, bounded in memory."""

    def __init__(
        self,
        schema: GraphSchema,
        *,
        work_dir: Path,
        limit_per_rule: int = DEFAULT_LIMIT_PER_RULE,
        memory_limit: str = "512MB",
        threads: int = 2,
    ) -> None:
        self.schema = schema
        self.limit = limit_per_rule
        self.work_dir = work_dir
        # A database file in the work directory: staged tables live on disk and only
        # `memory_limit` of them in memory (an in-memory database would hold every row).
        self._file = work_dir / "validation.duckdb"
        self._remove_file()
        self.db = duckdb.connect(str(self._file), config={"memory_limit": memory_limit, "threads": threads})
        self.db.execute(f"SET temp_directory = {_s(str(work_dir / 'duckdb.tmp'))}")
        self.db.execute("SET preserve_insertion_order = true")
        self.db.execute(
            "CREATE TABLE problems (file_index INTEGER, file VARCHAR, row BIGINT, "
            "col VARCHAR, value VARCHAR, rule VARCHAR)"
        )

    def close(self) -> None:
        self.db.close()
        self._remove_file()

    def _remove_file(self) -> None:
        for path in (self._file, self._file.with_suffix(".duckdb.wal")):
            path.unlink(missing_ok=True)

    def __enter__(self) -> Validation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    def _stage(self, index: int, staged: StagedFile) -> tuple[str, dict[str, str]]:
        """The file as a relation with its row numbers; its columns and their types."""
        name = f"f{index}"
        path = _s(str(staged.path))
        if staged.format == "csv":  # parsed once, as text (a bad value is seen as written)
            # Row numbers from the table's insertion order (rowid), not a window over the file,
            # which would hold the whole file in memory.
            self.db.execute(
                f"CREATE TABLE {name}_text AS "
                f"SELECT * FROM read_csv({path}, all_varchar = true, header = true)"
            )
            self.db.execute(f"CREATE VIEW {name} AS SELECT rowid + 1 AS {ROW}, * FROM {name}_text")
        else:  # read where it lies, as often as the rules need
            source = (
                f"SELECT file_row_number + 1 AS {ROW}, * EXCLUDE (file_row_number) "
                f"FROM read_parquet({path}, file_row_number = true)"
            )
            self.db.execute(f"CREATE VIEW {name} AS {source}")
        described = self.db.execute(f"DESCRIBE {name}").fetchall()
        return name, {str(row[0]): str(row[1]) for row in described if row[0] != ROW}

    def _problem(
        self, index: int, staged: StagedFile, rule: str, column: str | None, value: str | None
    ) -> None:
        self.db.execute(
            "INSERT INTO problems VALUES (?, ?, NULL, ?, ?, ?)", [index, staged.name, column, value, rule]
        )

    # -- the rules ------------------------------------------------------------------------

    def run(self, files: Sequence[StagedFile], existing: Mapping[str, Path]) -> Report:
        """Check `files` (`existing`: table -> Parquet of the rows the graph holds, for the
        tables that have any) and, when nothing is wrong, write the clean Parquet files."""
        staged: dict[str, list[tuple[int, StagedFile, str]]] = {}
        in_load_form: set[int] = set()  # Parquet with the table's columns, in order, and types
        for index, item in enumerate(files):
            table = self.schema.table(item.table)
            assert table is not None, item.table  # the caller checked the table names
            name, found_types = self._stage(index, item)
            columns = list(found_types)
            wanted = expected_columns(table)
            missing = [c for c in wanted if c not in columns]
            extra = [c for c in columns if c not in wanted]
            for column in missing:
                self._problem(index, item, "missing_column", column, None)
            for column in extra:
                self._problem(index, item, "extra_column", column, None)
            if not missing and not extra:
                staged.setdefault(item.table, []).append((index, item, name))
                if item.format == "parquet" and found_types == column_types(self.schema, table):
                    in_load_form.add(index)
        union: dict[str, str] = {}
        for table_name, parts in staged.items():
            table = self.schema.table(table_name)
            assert table is not None
            types = column_types(self.schema, table)
            for index, item, name in parts:
                self._types(index, item, name, types)
            keys = [table.primary_key] if isinstance(table, NodeTable) else ["from", "to"]
            union[table_name] = self._union(table_name, parts, {k: types[k] for k in keys})
        for table_name in staged:
            table = self.schema.table(table_name)
            if isinstance(table, NodeTable):
                self._keys(table, union[table_name], existing.get(table_name))
        for table_name in staged:
            table = self.schema.table(table_name)
            if isinstance(table, RelTable):
                self._endpoints(table, union[table_name], union, existing)
        report = self._report()
        report.rows = {
            t: int(self.db.execute(f"SELECT count(*) FROM {u}").fetchone()[0])  # type: ignore[index]
            for t, u in union.items()
        }
        if report.valid:
            for table_name, parts in staged.items():
                kept = [item for index, item, _ in parts if index in in_load_form]
                rest = [(index, item, name) for index, item, name in parts if index not in in_load_form]
                written = [self._write(table_name, rest)] if rest else []
                report.outputs[table_name] = kept + written
        return report

    def _types(self, index: int, item: StagedFile, name: str, types: Mapping[str, str]) -> None:
        for column, kind in types.items():
            if kind == "VARCHAR":
                continue
            value = _q(column)
            self.db.execute(
                f"INSERT INTO problems SELECT ?, ?, {ROW}, ?, CAST({value} AS VARCHAR), 'type' "
                f"FROM {name} WHERE {value} IS NOT NULL AND TRY_CAST({value} AS {kind}) IS NULL",
                [index, item.name, column],
            )

    def _union(
        self, table: str, parts: Sequence[tuple[int, StagedFile, str]], types: Mapping[str, str]
    ) -> str:
        """The key columns of every staged row of `table` (what the key and endpoint rules read),
        converted where they convert (else NULL, and a `type` problem already)."""
        name = f"u_{table.lower()}_{len(parts)}_{parts[0][0]}"
        selects = []
        for index, item, part in parts:
            columns = ", ".join(f"TRY_CAST({_q(c)} AS {kind}) AS {_q(c)}" for c, kind in types.items())
            selects.append(
                f"SELECT {index} AS __file_index, {_s(item.name)} AS __file, {ROW}, {columns} FROM {part}"
            )
        self.db.execute(f"CREATE VIEW {name} AS " + " UNION ALL ".join(selects))
        return name

    def _keys(self, table: NodeTable, union: str, existing: Path | None) -> None:
        key = _q(table.primary_key)
        pk = _s(table.primary_key)
        # A NULL key that came from a value that did not convert is a `type` problem already.
        self.db.execute(
            f"INSERT INTO problems SELECT {_AT}, {pk}, NULL, 'null_primary_key' FROM {union} u "
            f"WHERE u.{key} IS NULL AND {_not_a_type_problem(pk)}"
        )
        self.db.execute(
            f"INSERT INTO problems SELECT __file_index, __file, {ROW}, {pk}, CAST({key} AS VARCHAR), "
            f"'duplicate_primary_key' FROM (SELECT *, count(*) OVER (PARTITION BY {key}) AS n FROM {union} "
            f"WHERE {key} IS NOT NULL) WHERE n > 1"
        )
        if existing is not None:
            self.db.execute(
                f"INSERT INTO problems SELECT {_AT}, {pk}, CAST(u.{key} AS VARCHAR), 'existing_primary_key' "
                f"FROM {union} u SEMI JOIN read_parquet({_s(str(existing))}) g ON g.{key} = u.{key}"
            )

    def _endpoints(
        self, table: RelTable, union: str, staged: Mapping[str, str], existing: Mapping[str, Path]
    ) -> None:
        nodes = {n.name: n for n in self.schema.nodes}
        for end, target in (("from", table.source), ("to", table.target)):
            column = _q(end)
            self.db.execute(
                f"INSERT INTO problems SELECT {_AT}, {_s(end)}, NULL, 'null_endpoint' FROM {union} u "
                f"WHERE u.{column} IS NULL AND {_not_a_type_problem(_s(end))}"
            )
            key = _q(nodes[target].primary_key)
            sources = []
            if target in staged:
                sources.append(f"SELECT {key} AS k FROM {staged[target]}")
            if target in existing:
                sources.append(f"SELECT {key} AS k FROM read_parquet({_s(str(existing[target]))})")
            known = " UNION ALL ".join(sources) if sources else "SELECT NULL AS k WHERE false"
            self.db.execute(
                f"INSERT INTO problems SELECT {_AT}, {_s(end)}, CAST(u.{column} AS VARCHAR), "
                f"'missing_endpoint' FROM {union} u WHERE u.{column} IS NOT NULL "
                f"AND NOT EXISTS (SELECT 1 FROM ({known}) n WHERE n.k = u.{column})"
            )

    def _report(self) -> Report:
        counts = dict.fromkeys(RULES, 0)
        for rule, n in self.db.execute("SELECT rule, count(*) FROM problems GROUP BY rule").fetchall():
            counts[str(rule)] = int(n)
        rows = self.db.execute(
            "SELECT file, row, col, value, rule FROM (SELECT *, row_number() OVER (PARTITION BY rule "
            "ORDER BY file_index, row NULLS FIRST, col) AS n FROM problems) WHERE n <= ? "
            "ORDER BY file_index, row NULLS FIRST, col, rule",
            [self.limit],
        ).fetchall()
        problems = [
            Problem(str(f), None if r is None else int(r), c, v, str(rule)) for f, r, c, v, rule in rows
        ]
        return Report(problems=problems, counts=counts)

    def _write(self, table_name: str, parts: Sequence[tuple[int, StagedFile, str]]) -> StagedFile:
        """The rows of `parts` converted to the table's types, in its column order, as one file."""
        table = self.schema.table(table_name)
        assert table is not None
        types = column_types(self.schema, table)
        out = self.work_dir / f"{table_name}.parquet"
        columns = ", ".join(f"CAST({_q(c)} AS {kind}) AS {_q(c)}" for c, kind in types.items())
        rows = " UNION ALL ".join(f"SELECT {columns} FROM {name}" for _, _, name in parts)
        self.db.execute(f"COPY ({rows}) TO {_s(str(out))} (FORMAT parquet)")
        return StagedFile(table_name, f"{table_name}.parquet", out, "parquet", written=True)
