"""Sizes as people read them: one way of writing bytes, used by every figure rayipy
shows (``rayipy status``, ``memory_summary``, the dashboard, error messages)."""

from __future__ import annotations


def format_bytes(n: float, decimals: int = 1) -> str:
    """``512 B``, ``1.5 KiB``, ``190.7 MiB``, ``7.0 GiB``: binary units."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    unit = "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if abs(n) < 1024:
            break
    return f"{n:.{decimals}f} {unit}"
