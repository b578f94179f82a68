"""The README says what the code does: its commands and its job table."""

from __future__ import annotations

import re
from pathlib import Path

from beatless.jobs.table import extract_from, render_markdown

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_job_table_matches_the_registry() -> None:
    assert extract_from(README) == render_markdown()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci_lines = [
        line.strip()
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert len(ci_lines) == 1
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [
        line.strip() for line in first_block.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert len(commands) == 2  # the two commands the README opens with
    assert commands[1] == ci_lines[0]
    assert re.match(r"\./scripts/setup\.sh && \.venv/bin/beatless local$", commands[0])


def test_every_documented_bench_script_exists() -> None:
    for script in set(re.findall(r"bench/[a-z_]+\.py", README)):
        assert (REPO / script).exists(), script


def test_the_registries_contract_is_the_one_in_the_code() -> None:
    import beatless.graphs.registry as registry

    documented = README.split("<!-- registries:begin -->", 1)[1].split("<!-- registries:end -->", 1)[0]
    doc = registry.__doc__ or ""
    contract = doc[doc.index("**Instance registry**") : doc.index("A `draining` node takes")]
    assert documented.strip() == contract.strip()


def test_the_operations_table_is_the_catalogue() -> None:
    from beatless.operations import catalogue

    assert catalogue.extract_from(README) == catalogue.render_markdown()
