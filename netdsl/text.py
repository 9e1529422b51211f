"""Text shared by every stage's output: counts in human units, shapes as `[C, H, W]`."""

from __future__ import annotations


def human(count: int) -> str:
    """`25.56 M`, `4.09 G`, `512`."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return str(count)


def shape_text(shape) -> str:
    """`[64, 56, 56]`."""
    return "[" + ", ".join(map(str, shape)) + "]"
