"""SQL text that statements cannot take as parameters (COPY targets, view definitions)."""

from __future__ import annotations


def literal(text: str) -> str:
    """Return `text` (a path, a glob) as a SQL string literal, quotes doubled."""
    return "'" + text.replace("'", "''") + "'"
