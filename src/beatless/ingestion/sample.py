"""A generated financial dataset: companies, their filings and reported facts, and who
owns shares of whom — the sample `beatless local` ingests, and the tests' and benches'
realistic upload batch.

Ownership has planted communities: companies come in groups (conglomerates) and
almost every holding stays inside its group, so community detection has a known
answer (`SampleDataset.group_of`). Everything is derived from the seed.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA: dict[str, Any] = {
    "nodes": [
        {
            "name": "Company",
            "primary_key": "cik",
            "properties": {"cik": "STRING", "name": "STRING", "sector": "STRING"},
        },
        {
            "name": "Filing",
            "primary_key": "accession",
            "properties": {"accession": "STRING", "form": "STRING", "filed": "DATE", "cik": "STRING"},
        },
        {
            "name": "Fact",
            "primary_key": "id",
            "properties": {"id": "INT64", "concept": "STRING", "value": "DOUBLE", "cik": "STRING"},
        },
    ],
    "relationships": [
        {"name": "Filed", "from": "Company", "to": "Filing"},
        {"name": "Reports", "from": "Filing", "to": "Fact"},
        {"name": "Owns", "from": "Company", "to": "Company", "properties": {"share": "DOUBLE"}},
    ],
}

SECTORS = ("tech", "bank", "energy", "health", "retail")
FORMS = ("10-K", "10-Q", "8-K")
CONCEPTS = ("Revenue", "Assets", "NetIncome", "Liabilities")
FILINGS_PER_COMPANY = 3
FACTS_PER_FILING = 4
HOLDINGS_PER_COMPANY = 4
IN_GROUP_SHARE = 0.95  # of holdings inside the company's own group


@dataclass(frozen=True)
class SampleDataset:
    companies: list[tuple[str, str, str]]  # cik, name, sector
    filings: list[tuple[str, str, str, str]]  # accession, form, filed (ISO date), cik
    facts: list[tuple[int, str, float, str]]  # id, concept, value, cik
    filed: list[tuple[str, str]]  # cik -> accession
    reports: list[tuple[str, int]]  # accession -> fact id
    owns: list[tuple[str, str, float]]  # holder cik -> held cik, share
    group_of: dict[str, int]  # the planted community of each company

    def rows(self) -> dict[str, int]:
        """Rows per table, as a load of the whole dataset reports them."""
        return {
            "Company": len(self.companies),
            "Filing": len(self.filings),
            "Fact": len(self.facts),
            "Filed": len(self.filed),
            "Reports": len(self.reports),
            "Owns": len(self.owns),
        }


def financial_dataset(companies: int = 200, seed: int = 7, group_size: int = 25) -> SampleDataset:
    """`companies` companies in groups of `group_size`; the rest follows (about 35 rows per company)."""
    if companies < 2:
        raise ValueError(f"companies must be at least 2, got {companies}")
    rng = random.Random(seed)
    ciks = [f"{i:010d}" for i in range(companies)]
    group_of = {cik: i // group_size for i, cik in enumerate(ciks)}
    members: dict[int, list[str]] = {}
    for cik, group in group_of.items():
        members.setdefault(group, []).append(cik)
    rows = [(cik, f"Company {cik[-4:]} {rng.choice(('Inc', 'Corp', 'Holdings', 'Group'))}", "")
            for cik in ciks]  # fmt: skip
    company_rows = [(cik, name, SECTORS[group_of[cik] % len(SECTORS)]) for cik, name, _ in rows]
    filings = [
        (
            f"{cik}-{k:02d}",
            rng.choice(FORMS),
            f"2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            cik,
        )
        for cik in ciks
        for k in range(FILINGS_PER_COMPANY)
    ]
    facts = [
        (i, rng.choice(CONCEPTS), round(rng.uniform(-1e6, 1e9), 2), filings[i // FACTS_PER_FILING][3])
        for i in range(len(filings) * FACTS_PER_FILING)
    ]
    holdings: dict[tuple[str, str], float] = {}
    for holder in ciks:
        own_group = members[group_of[holder]]
        for _ in range(HOLDINGS_PER_COMPANY):
            pool = own_group if rng.random() < IN_GROUP_SHARE and len(own_group) > 1 else ciks
            held = rng.choice(pool)
            if held != holder:
                holdings.setdefault((holder, held), round(rng.uniform(0.01, 0.5), 4))
    return SampleDataset(
        companies=company_rows,
        filings=filings,
        facts=facts,
        filed=[(f[3], f[0]) for f in filings],
        reports=[(filings[i // FACTS_PER_FILING][0], i) for i in range(len(facts))],
        owns=[(a, b, share) for (a, b), share in sorted(holdings.items())],
        group_of=group_of,
    )


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def parquet_bytes(columns: dict[str, str], rows: Sequence[Sequence[Any]]) -> bytes:
    """`rows` as a Parquet file of `columns` (name -> Arrow type name, e.g. "string", "int64")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {
        name: pa.array([row[i] for row in rows], type=pa.type_for_alias(kind))
        for i, (name, kind) in enumerate(columns.items())
    }
    buffer = io.BytesIO()
    pq.write_table(pa.table(arrays), buffer)
    return buffer.getvalue()


def upload(s3: Any, bucket: str, prefix: str, data: SampleDataset) -> list[dict[str, str]]:
    """Write `data` under `prefix` as an upload batch — companies and relationships as CSV,
    filings and facts as Parquet — and return the batch's files (`stage_files`' `files`)."""
    text = "string"
    objects = {
        ("Company", "companies.csv"): csv_bytes(("cik", "name", "sector"), data.companies),
        ("Filing", "filings.parquet"): parquet_bytes(
            {"accession": text, "form": text, "filed": text, "cik": text}, data.filings
        ),
        ("Fact", "facts.parquet"): parquet_bytes(
            {"id": "int64", "concept": text, "value": "double", "cik": text}, data.facts
        ),
        ("Filed", "filed.csv"): csv_bytes(("from", "to"), data.filed),
        ("Reports", "reports.csv"): csv_bytes(("from", "to"), data.reports),
        ("Owns", "owns.csv"): csv_bytes(("from", "to", "share"), data.owns),
    }
    files = []
    for (table, name), body in objects.items():
        key = f"{prefix.rstrip('/')}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        files.append({"table": table, "key": key})
    return files
