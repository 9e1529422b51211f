"""Bounds that keep the checker (and the analyses that re-run its rules) finite on hostile input."""

from __future__ import annotations

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
