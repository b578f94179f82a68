"""A registry job's Lambda handler, loaded from its entry point file (a source checkout)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from beatless.errors import InvalidInputError
from beatless.jobs import job

CHECKOUT = Path(__file__).resolve().parents[3]


def entry_point_handler(name: str) -> Any:
    entry = job(name)
    path = CHECKOUT / entry.entry_point
    if not path.exists():
        raise InvalidInputError("name", f"{entry.entry_point} not found: run from a source checkout")
    spec = importlib.util.spec_from_file_location(entry.name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler
