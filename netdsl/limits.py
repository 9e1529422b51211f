"""Bounds that keep the checker (and the analyses that re-run its rules) finite on hostile input."""

from __future__ import annotations

import os
from dataclasses import dataclass

SOURCE_BYTES = 16 * 2**20  # one .net file, the main one or an import; a larger one is refused unread


@dataclass(frozen=True)
class Limits:
    block_depth: int = 100  # nested block instantiations (catches a block that calls itself)
    repeat: int = 10_000  # one `x N`
    layers: int = 200_000  # layers in one network
    elements: int = 2**31  # elements of one tensor, per sample
    int_bits: int = 256  # size of integers produced by arithmetic
    steps: int = 200_000  # statements executed, loop iterations and repetitions, in all (resnet152: 571)
    sequence: int = 100_000  # items in a list or characters in a string built by an expression
    value: int = 1_000_000  # elements in one value, all its nested lists' items (a list held twice counts twice)


MEMORY_SHARE = 0.5  # of the memory available when compile starts: the default limit on a model's weights


def available_memory() -> int | None:
    """Bytes of memory this process can still get: the system's available memory, or less where a
    control group (a container's limit) allows less; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as maximum, \
                open("/sys/fs/cgroup/memory.current", encoding="ascii") as current:
            limit = maximum.read().strip()
            if limit != "max":
                found.append(max(int(limit) - int(current.read().strip()), 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def default_max_bytes() -> int | None:
    """The default limit on the bytes of a compiled model's weights: `MEMORY_SHARE` of the available memory."""
    available = available_memory()
    return None if available is None else int(available * MEMORY_SHARE)
