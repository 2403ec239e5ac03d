"""Byte sizes for people: ``"4Gi"`` in, ``"4.0Gi"`` out (no dependencies: task processes import it)."""

from __future__ import annotations

from argosy.errors import UsageError


def parse_memory(value: str | int | float | None) -> int | None:
    """Bytes from ``"512Mi"``, ``"4Gi"``, ``"1G"``, ``"100M"``, ``"2048"`` or a number."""
    if value is None:
        return None
    if isinstance(value, int | float):
        if value < 0:
            raise UsageError(f"memory must not be negative, got {value}")
        return int(value)
    text = value.strip()
    units = {
        "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
        "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
        "k": 1000,
    }  # fmt: skip
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            factor = units[suffix]
            break
    else:
        number, factor = text, 1
    try:
        amount = float(number)
    except ValueError:
        raise UsageError(
            f"cannot read memory size {value!r}: use a number of bytes or a unit such as "
            "'512Mi', '4Gi' or '1G'"
        ) from None
    if amount < 0:
        raise UsageError(f"memory must not be negative, got {value!r}")
    return int(amount * factor)


def format_bytes(n: int | None) -> str:
    """``1.5Gi``, ``200.0Mi``, ``12B``: the inverse of :func:`parse_memory`, for people."""
    if n is None:
        return ""
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"
