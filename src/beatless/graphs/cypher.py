"""What a read-only query may be, checked before the engine sees it.

The graph node runs a query inside `BEGIN TRANSACTION READ ONLY`, so the engine
itself refuses writes. Before that, a query must be ONE statement (a `;`
outside strings and comments would let `COMMIT; CREATE ...` leave the
read-only transaction) and may not use the clauses that reach outside the
database or manage it — `COPY` (also `COPY ... TO` a file on the node),
`LOAD` (local files, extensions), `INSTALL`, `ATTACH`/`DETACH`, `EXPORT`/
`IMPORT`, `CHECKPOINT`, transaction control and `CALL` of procedures.
Errors are `InvalidInputError` naming the field `query`. Standard library only.
"""

from __future__ import annotations

import re

from beatless.errors import InvalidInputError

FORBIDDEN = (
    "COPY",
    "LOAD",
    "INSTALL",
    "ATTACH",
    "DETACH",
    "EXPORT",
    "IMPORT",
    "CHECKPOINT",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "USE",
    "CALL",
)
MAX_QUERY_CHARS = 100_000
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_read_only(query: object, field: str = "query") -> str:
    """The query, stripped of a trailing `;`, or `InvalidInputError` naming `field`."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(field, "must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInputError(field, f"is longer than {MAX_QUERY_CHARS} characters")
    words, semicolons = _scan(query, field)
    body = query.strip()
    if semicolons and not (semicolons == 1 and body.endswith(";")):
        raise InvalidInputError(field, "must be one statement (no ';' between statements)")
    for word in words:
        if word.upper() in FORBIDDEN:
            raise InvalidInputError(field, f"{word.upper()} is not allowed in a read-only query")
    return body.removesuffix(";").strip()


def _scan(text: str, field: str) -> tuple[list[str], int]:
    """The words (but properties and labels) and the number of `;` outside quotes
    (' " `) and comments (// /* */)."""
    words: list[str] = []
    semicolons = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            end = i + 1
            while end < n and text[end] != ch:
                end += 2 if text[end] == "\\" else 1
            if end >= n:
                raise InvalidInputError(field, f"has an unterminated {ch}...{ch}")
            i = end + 1
        elif text.startswith("//", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise InvalidInputError(field, "has an unterminated /* comment")
            i = close + 2
        elif ch == ";":
            semicolons += 1
            i += 1
        else:
            match = _WORD.match(text, i)
            if match:
                before = text[:i].rstrip()[-1:]
                if before not in (".", ":"):  # c.load, (:Load): a property or a label, not a clause
                    words.append(match.group())
                i = match.end()
            else:
                i += 1
    return words, semicolons
