"""Shared formatting: the numbers and shapes every stage prints → their one spelling.

The command line, the summary tables, the drawings and the editor's hovers all say `11.69 M`
parameters, `[3, 224, 224]` for a shape and `3×224×224` for a compact size; they take it from here.
"""

from __future__ import annotations

from typing import Iterable


def human(count: int) -> str:
    """`11.69 M`, `1.82 G`, `512`: a count in decimal units, two decimals from a thousand up."""
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return str(count)


def byte_text(size: int) -> str:
    """`46.76 MB`, `18.45 EB`, `512 B`: a size in bytes in decimal units, two decimals from a kilobyte up."""
    for unit, scale in (("EB", 10**18), ("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} B"


def shape_text(shape: Iterable[int]) -> str:
    """`[3, 224, 224]`: a tensor shape as the language writes it (`input [3, 224, 224]`)."""
    return f"[{', '.join(map(str, shape))}]"


def dims_text(shape: Iterable[int]) -> str:
    """`3×224×224`: a shape in a table cell or a label, where brackets would be noise."""
    return "×".join(map(str, shape))


def plural(count: int, noun: str) -> str:
    """`1 file`, `3 files`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
