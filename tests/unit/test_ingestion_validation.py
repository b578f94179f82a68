"""Validation of uploaded files in DuckDB (`beatless.ingestion.validation`): one test per
rule, each with the exact report, and nothing written when any file has a problem."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beatless.graphs.schema import GraphSchema
from beatless.ingestion.validation import StagedFile, Validation

SCHEMA = GraphSchema.parse(
    {
        "nodes": [
            {
                "name": "Company",
                "primary_key": "id",
                "properties": {"id": "STRING", "name": "STRING", "revenue": "DOUBLE", "founded": "DATE"},
            },
            {"name": "Filing", "primary_key": "no", "properties": {"no": "INT64", "form": "STRING"}},
        ],
        "relationships": [
            {"name": "Owns", "from": "Company", "to": "Company", "properties": {"share": "DOUBLE"}},
            {"name": "Filed", "from": "Company", "to": "Filing"},
        ],
    }
)


def csv(tmp_path: Path, name: str, text: str, table: str) -> StagedFile:
    path = tmp_path / name
    path.write_text(text)
    return StagedFile(table, f"uploads/{name}", path, "csv")


def parquet(tmp_path: Path, name: str, data: pa.Table, table: str) -> StagedFile:
    path = tmp_path / name
    pq.write_table(data, path)
    return StagedFile(table, f"uploads/{name}", path, "parquet")


COMPANIES = "id,name,revenue,founded\nc1,One,1.5,2001-02-03\nc2,Two,2.5,2002-03-04\nc3,Three,,2003-04-05\n"


def check(tmp_path: Path, files: list[StagedFile], existing: dict[str, Path] | None = None, limit: int = 20):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with Validation(SCHEMA, work_dir=out, limit_per_rule=limit) as validation:
        report = validation.run(files, existing or {})
    return report


def found(report) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [(p.file, p.row, p.column, p.value, p.rule) for p in report.problems]


def test_clean_files_are_written_typed_in_the_tables_column_order(tmp_path: Path) -> None:
    companies = csv(tmp_path, "companies.csv", COMPANIES, "Company")
    owns = parquet(
        tmp_path,
        "owns.parquet",
        pa.table({"from": ["c1", "c2"], "to": ["c2", "c3"], "share": [0.5, 0.25]}),
        "Owns",
    )
    filings = csv(tmp_path, "filings.csv", "form,no\n10-K,7\n10-Q,8\n", "Filing")  # columns in any order
    filed = csv(tmp_path, "filed.csv", "from,to\nc1,7\nc3,8\n", "Filed")
    report = check(tmp_path, [companies, owns, filings, filed])
    assert report.valid and report.problems == [] and not any(report.counts.values())
    assert report.rows == {"Company": 3, "Owns": 2, "Filing": 2, "Filed": 2}
    (company,) = report.outputs["Company"]
    assert company.written
    written = pq.read_table(company.path)
    assert written.column_names == ["id", "name", "revenue", "founded"]
    assert written.schema.field("revenue").type == pa.float64()
    assert written.column("revenue").to_pylist() == [1.5, 2.5, None]
    assert str(written.column("founded")[0]) == "2001-02-03"
    (filing,) = report.outputs["Filing"]
    assert pq.read_table(filing.path).column_names == ["no", "form"]
    assert pq.read_table(filing.path).column("no").to_pylist() == [7, 8]
    # A Parquet upload already in load form (columns, order, types) is kept as it is.
    assert report.outputs["Owns"] == [owns] and not owns.written


def test_missing_and_extra_columns(tmp_path: Path) -> None:
    bad = csv(tmp_path, "c.csv", "id,title,revenue\nc1,One,1.5\n", "Company")
    report = check(tmp_path, [bad])
    assert found(report) == [
        ("uploads/c.csv", None, "founded", None, "missing_column"),
        ("uploads/c.csv", None, "name", None, "missing_column"),
        ("uploads/c.csv", None, "title", None, "extra_column"),
    ]
    assert report.counts["missing_column"] == 2 and report.counts["extra_column"] == 1
    assert not report.valid and report.outputs == {}


def test_values_that_do_not_convert_are_reported_as_written(tmp_path: Path) -> None:
    text = COMPANIES + "c4,Four,lots,2004-01-01\nc5,Five,5.0,2004-13-40\n"
    filings = csv(tmp_path, "f.csv", "no,form\n1,10-K\nseven,10-Q\n", "Filing")
    report = check(tmp_path, [csv(tmp_path, "c.csv", text, "Company"), filings])
    assert found(report) == [
        ("uploads/c.csv", 4, "revenue", "lots", "type"),
        ("uploads/c.csv", 5, "founded", "2004-13-40", "type"),
        ("uploads/f.csv", 2, "no", "seven", "type"),
    ]
    assert report.outputs == {}


def test_a_null_primary_key(tmp_path: Path) -> None:
    report = check(tmp_path, [csv(tmp_path, "c.csv", COMPANIES + ",Nameless,1.0,2001-01-01\n", "Company")])
    assert found(report) == [("uploads/c.csv", 4, "id", None, "null_primary_key")]


def test_duplicate_primary_keys_within_and_across_files(tmp_path: Path) -> None:
    first = csv(tmp_path, "a.csv", COMPANIES + "c1,Again,9.0,2001-01-01\n", "Company")
    second = parquet(
        tmp_path,
        "b.parquet",
        pa.table(
            {"id": ["c2", "c9"], "name": ["x", "y"], "revenue": [1.0, 2.0], "founded": ["2001-01-01"] * 2}
        ),
        "Company",
    )
    report = check(tmp_path, [first, second])
    assert found(report) == [
        ("uploads/a.csv", 1, "id", "c1", "duplicate_primary_key"),
        ("uploads/a.csv", 2, "id", "c2", "duplicate_primary_key"),
        ("uploads/a.csv", 4, "id", "c1", "duplicate_primary_key"),
        ("uploads/b.parquet", 1, "id", "c2", "duplicate_primary_key"),
    ]


def test_a_key_the_graph_holds_already(tmp_path: Path) -> None:
    held = tmp_path / "held.parquet"
    pq.write_table(pa.table({"id": ["c2", "c7"], "name": ["a", "b"]}), held)
    report = check(tmp_path, [csv(tmp_path, "c.csv", COMPANIES, "Company")], existing={"Company": held})
    assert found(report) == [("uploads/c.csv", 2, "id", "c2", "existing_primary_key")]


def test_relationship_ends_missing_from_the_batch_and_the_graph_even_beside_a_null(tmp_path: Path) -> None:
    held = tmp_path / "held.parquet"
    pq.write_table(pa.table({"id": ["g1"]}), held)
    owns = csv(tmp_path, "o.csv", "from,to,share\nc1,g1,0.5\nc1,zz,0.5\n,c2,0.1\nyy,c3,0.2\n", "Owns")
    report = check(tmp_path, [csv(tmp_path, "c.csv", COMPANIES, "Company"), owns], existing={"Company": held})
    # A NULL end must not hide the missing ones (the NOT IN trap): both are found.
    assert found(report) == [
        ("uploads/o.csv", 2, "to", "zz", "missing_endpoint"),
        ("uploads/o.csv", 3, "from", None, "null_endpoint"),
        ("uploads/o.csv", 4, "from", "yy", "missing_endpoint"),
    ]


def test_at_most_n_problems_of_a_rule_are_listed_with_the_total(tmp_path: Path) -> None:
    rows = "".join(f"c{i},N,bad{i},2001-01-01\n" for i in range(50))
    report = check(tmp_path, [csv(tmp_path, "c.csv", "id,name,revenue,founded\n" + rows, "Company")], limit=5)
    assert report.counts["type"] == 50
    assert [p.row for p in report.problems] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_both_formats_give_the_same_clean_output(tmp_path: Path, fmt: str) -> None:
    if fmt == "csv":
        item = csv(tmp_path, "c.csv", COMPANIES, "Company")
    else:
        data = pa.table(
            {
                "id": ["c1", "c2", "c3"],
                "name": ["One", "Two", "Three"],
                "revenue": [1.5, 2.5, None],
                "founded": ["2001-02-03", "2002-03-04", "2003-04-05"],
            }
        )
        item = parquet(tmp_path, "c.parquet", data, "Company")
    report = check(tmp_path, [item])
    (out,) = report.outputs["Company"]
    assert out.written  # CSV is text, and the Parquet's `founded` is a string, not a DATE
    first = pq.read_table(out.path).to_pylist()[0]
    assert (first["id"], first["name"], first["revenue"], str(first["founded"])) == (
        "c1",
        "One",
        1.5,
        "2001-02-03",
    )
    assert report.rows == {"Company": 3}


def test_several_files_of_a_table_become_one_in_load_form_beside_those_already_in_it(tmp_path: Path) -> None:
    ready = parquet(
        tmp_path,
        "ready.parquet",
        pa.table({"from": ["c1"], "to": ["c2"], "share": [0.5]}),
        "Owns",
    )
    text = csv(tmp_path, "more.csv", "from,to,share\nc2,c3,0.25\nc3,c1,0.75\n", "Owns")
    also = csv(tmp_path, "also.csv", "share,to,from\n0.1,c1,c2\n", "Owns")  # columns in another order
    report = check(tmp_path, [csv(tmp_path, "c.csv", COMPANIES, "Company"), ready, text, also])
    kept, written = report.outputs["Owns"]
    assert kept == ready and written.written
    rows = pq.read_table(written.path).to_pylist()
    assert pq.read_table(written.path).column_names == ["from", "to", "share"]
    assert sorted(rows, key=lambda r: r["share"]) == [
        {"from": "c2", "to": "c1", "share": 0.1},
        {"from": "c2", "to": "c3", "share": 0.25},
        {"from": "c3", "to": "c1", "share": 0.75},
    ]
