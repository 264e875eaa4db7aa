"""Wording helpers for messages a user reads: anything echoed back is cut to a sane length and never
rendered in full (a 5 MB name, a 400-digit number or a structure nested 1,000 deep stays one short line)."""
from __future__ import annotations

LIMIT = 80


def clip(text: str, limit: int = LIMIT) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def show(value, limit: int = LIMIT) -> str:
    """A short, safe rendering of a value taken from user input or a file."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 3 * limit:  # repr alone could exceed Python's digit limit
            return f"a number with about {int(value.bit_length() * 0.30103) + 1} digits"
        return clip(repr(value), limit)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    return f"a value of type {type(value).__name__}"
