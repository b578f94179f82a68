"""A Lambda's handler, loaded from its entry point file `bin/lambda/<name>.py` (a source checkout)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from beatless.errors import InvalidInputError

CHECKOUT = Path(__file__).resolve().parents[3]


def entry_point_handler(name: str) -> Any:
    path = CHECKOUT / "bin" / "lambda" / f"{name}.py"
    if not path.exists():
        raise InvalidInputError("name", f"bin/lambda/{name}.py not found: run from a source checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler
