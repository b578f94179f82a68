"""The worker image's recipe, checked without a Docker engine (there is none
here, so the image itself is not built in the tests).

`worker/Dockerfile` is built with the repository root as context, which
`.dockerignore` turns into an allow-list.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "worker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def only(keyword: str) -> str:
    found = [args for kw, args in instructions() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def in_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the repository root) into the context.

    Docker's rule: the last pattern that matches the path or one of its
    parent directories decides; ``!`` re-includes.
    """
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern_regex(line.lstrip("!"))))
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            included = negated
    return included


def test_base_image_is_python_312_slim() -> None:
    assert [args for kw, args in instructions() if kw == "FROM"] == ["python:3.12-slim"]


def test_celery_runs_as_pid_1_in_exec_form() -> None:
    entrypoint = json.loads(only("ENTRYPOINT"))  # exec form is a JSON array; shell form would not parse
    assert entrypoint == ["celery", "-A", "worker.app", "worker"]
    command = json.loads(only("CMD"))
    assert isinstance(command, list)
    assert not {"sh", "bash", "/bin/sh", "-c"} & set(entrypoint + command)
    # Every option is one `celery worker` knows.
    help_text = subprocess.run(
        [sys.executable, "-m", "celery", "worker", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for option in command:
        assert option.split("=")[0] in help_text, option


def test_runs_as_a_non_root_user() -> None:
    user = only("USER")
    assert user.split(":")[0] not in ("root", "0")


def test_shutdown_environment() -> None:
    env = " ".join(args for kw, args in instructions() if kw == "ENV")
    # SIGTERM must start Celery's warm shutdown (worker/shutdown.py); the worker refuses REMAP_SIGTERM.
    assert "REMAP_SIGTERM" not in env
    assert "PYTHONPATH=/app" in env


def test_health_check_is_the_worker_health_check_module() -> None:
    health = only("HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    assert json.loads(command) == ["python", "-m", "worker.healthcheck"]
    assert "--timeout=" in options and "--interval=" in options
    from worker import healthcheck

    assert callable(healthcheck.main)


def test_installs_the_worker_extra_within_the_lock() -> None:
    runs = " ".join(args for kw, args in instructions() if kw == "RUN")
    assert 'pip install --constraint requirements.lock ".[worker]"' in runs
    assert "pip install --no-deps --constraint requirements.lock ." in runs


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    copies = [args.split() for kw, args in instructions() if kw == "COPY"]
    assert copies
    for args in copies:
        sources = [a for a in args[:-1] if not a.startswith("--")]
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [f for f in files if in_context(f.relative_to(REPO).as_posix())]
            assert kept, f"COPY {source}: .dockerignore leaves nothing of it in the context"
    # pyproject.toml names README.md as the readme: the build needs it.
    assert any("README.md" in args for args in copies)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "node_modules/aws-cdk/package.json",
        "cdk.out/manifest.json",
        ".git/HEAD",
        "tests/conftest.py",
        "infra/app.py",
        "src/beatless/__pycache__/broker.cpython-312.pyc",
        "src/beatless.egg-info/PKG-INFO",
        "worker/__pycache__/app.cpython-312.pyc",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert not in_context(path)


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "requirements.lock", "README.md", "src/beatless/broker.py", "worker/app.py"],
)
def test_dockerignore_lets_in(path: str) -> None:
    assert in_context(path)
