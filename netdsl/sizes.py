"""Input sizes: checked `Network` → the input sizes at which it is valid; and checking a
network at another input size than it declares, with the weights it has at the declared one.

One dimension at a time (height, then width, the other at its checked size), every size from
1 to a bound is pushed through the checked graph at once: each layer's registry shape rule gives
its output size, the combinators demand equal sizes, and a layer with weights must get the input
they were made for. The valid sizes are summarised as a minimum, a maximum when something pins
the size, and a period when adds and concatenations need divisibility. Pure: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .check import Checker, check_program, nested_too_deeply
from .combinators import COMBINATORS
from .errors import NetDSLError, ShapeError, Span
from .graph import Layer, Merge, Network, Shape, describe
from .layers import REGISTRY, LayerProblem, rule_shape
from .limits import Limits
from .resolve import Program
from .scopes import check_names
from .text import shape_text
from .walk import Interpreter

SCAN = 256  # sizes first examined per dimension (at least twice the checked size), doubled until the
SCAN_LIMIT = 8192  # summary is proven (see the NOTE) or this many (or 4 times the checked size) are done
MAX_SCAN = 65536  # never more sizes than this per dimension: a larger checked size is not analysed (time, memory)

# NOTE: [Valid input sizes]
# The analysis re-uses the checked graph, so it assumes the network's *structure* does not
# depend on the input size; where the source reads a size (`in.height`), it says so and stops.
# Exact for 1..bound: every size is pushed through every layer's own shape rule. Beyond the
# bound, by periodicity: a window maps n to floor((n + c) / stride) + 1 (ceil mode and
# `pad_identity` too), so with S a common multiple of the stride products along the paths, every
# size in the network grows by exactly S / P when the input grows by S. Once all windows fit
# (sizes only grow with the input), an add or concat whose paths have equal stride products is
# therefore S-periodic; one whose paths differ, or a fixed `linear`, holds for at most one input
# per residue class mod S, and a size that has outgrown a fixed layer never fits it again. The
# summary states a period only when the scan covers two full periods S after the pattern starts;
# otherwise it says up to where it checked.


@dataclass
class _Sizes:
    """The size along the analysed axis at one point of the dataflow, for every input size."""

    values: list[int]  # values[n]: the size for input size n; 0 where the network already failed
    distinct: frozenset[int]  # the nonzero values, where each layer's rule is evaluated
    period: int  # product of the strides on the way (for the periodicity argument)


@dataclass
class Limit:
    """What rules out input sizes: a layer (`path`, `op`) and why."""

    path: str
    op: str
    reason: str  # "shape" (the layer's rule rejects it), "weights" (fixed input), "merge" (sizes differ)
    span: Span
    message: str = ""  # for "shape": the gist of the rule's message, e.g. "conv output would be empty"
    name: str = ""  # how the message names the layer (`graph.describe`)

    def __str__(self) -> str:
        if self.reason == "merge":
            return f"{self.op} at {Path(self.span.file).name}:{self.span.line} needs equal sizes"
        named_by_op = self.name != self.path  # `linear at x.net:7` already says what it is
        if self.reason == "shape":
            return f"{self.name}: {self.message.removeprefix(f'{self.op} ') if named_by_op else self.message}"
        return f"{self.name}: {'its' if named_by_op else self.op} weights fix its input"

    def as_json(self) -> dict:
        return {"path": self.path, "op": self.op, "reason": self.reason, "message": self.message,
                "file": self.span.file, "line": self.span.line}


@dataclass
class Dimension:
    """The valid sizes of one input dimension (the others at their checked sizes)."""

    name: str  # "H", "W", "F" or the symbolic name from `input [3, H, W]`
    axis: int  # position in the input shape
    checked: int  # the size the network was checked at
    valid: list[int]  # every valid size up to `scanned`
    scanned: int
    period: int  # the valid sizes repeat with this period above `start` (1: all of them)
    start: int  # where the periodic tail starts (0 when the valid sizes are bounded)
    residues: tuple[int, ...]  # valid residues mod `period` in the tail
    certain: bool  # the tail is proven to continue beyond `scanned` (see the NOTE)
    limits: list[Limit] = field(default_factory=list)  # what bounds the valid sizes
    analysed: bool = True  # False: the checked size is beyond MAX_SCAN / 2, so no size was examined

    @classmethod
    def beyond_scan(cls, name: str, axis: int, checked: int) -> "Dimension":
        """A dimension too large to analyse: only the checked size is known to be valid."""
        return cls(name, axis, checked, [], 0, 1, 0, (), False, analysed=False)

    @property
    def minimum(self) -> int | None:
        return self.valid[0] if self.valid else None

    @property
    def maximum(self) -> int | None:
        """The largest valid size, or None when there is none (an unbounded tail)."""
        return None if self.start else (self.valid[-1] if self.valid else None)

    def describe(self) -> str:
        """`H >= 32`, `227 <= H <= 230`, `H >= 33 with H % 32 == 1`, ..."""
        if not self.analysed:
            return f"{self.name} = {self.checked} checked, other sizes not analysed beyond {MAX_SCAN}"
        if not self.valid:
            return f"no {self.name} up to {self.scanned}"
        caveat = "" if self.certain else f" (checked up to {self.scanned})"
        if not self.start:
            return _ranges(self.name, self.valid) + caveat
        head = [n for n in self.valid if n < self.start]
        tail = f"{self.name} >= {min(n for n in self.valid if n >= self.start)}"
        if self.period > 1:
            residues = self.residues[0] if len(self.residues) == 1 else "{" + ", ".join(map(str, self.residues)) + "}"
            tail += f" with {self.name} % {self.period} {'==' if len(self.residues) == 1 else 'in'} {residues}"
        return (f"{_ranges(self.name, head)} or {tail}" if head else tail) + caveat

    def as_json(self) -> dict:
        return {"analysed": self.analysed, "checked": self.checked, "min": self.minimum, "max": self.maximum,
                "period": self.period, "residues": list(self.residues), "periodic_from": self.start or None,
                "scanned": self.scanned, "proven_beyond_scan": self.certain, "text": self.describe(),
                "limited_by": [limit.as_json() for limit in self.limits]}


@dataclass
class ValidInputs:
    """The analysis of a network: one `Dimension` per analysed input dimension, or why there is none."""

    dimensions: list[Dimension]
    skipped: str | None = None  # why the sizes were not analysed

    def describe(self) -> str:
        if self.skipped:
            return f"valid inputs: not analysed ({self.skipped})"
        text = ", ".join(dimension.describe() for dimension in self.dimensions)
        limits = list(dict.fromkeys(str(limit) for dimension in self.dimensions for limit in dimension.limits))
        return f"valid inputs: {text}" + (f" ({'; '.join(limits[:3])})" if limits else "")

    def as_json(self) -> dict:
        """`{"analysed": true, "dimensions": {"H": {...}, "W": {...}}}`, or `{"analysed": false, "reason": ...}`."""
        if self.skipped:
            return {"analysed": False, "reason": self.skipped}
        return {"analysed": True, "dimensions": {dimension.name: dimension.as_json() for dimension in self.dimensions}}


def valid_inputs(network: Network, limits: Limits = Limits()) -> ValidInputs:
    """The input sizes at which `network` (with its weights) is valid, one dimension at a time;
    `limits.elements` bounds a tensor, as when the network was checked."""
    if network.reads_input_size is not None:
        where = network.reads_input_size
        return ValidInputs([], f"the network reads a tensor's size at {Path(where.file).name}:{where.line}, "
                               "so its structure may change with it; check sizes with --input")
    try:
        return _valid_inputs(network, limits)
    except _Coupled as coupled:
        where = coupled.layer.span
        return ValidInputs([], f"the network reshapes a tensor whose size follows the input's at "
                               f"{Path(where.file).name}:{where.line}, so one axis's sizes depend on another's; "
                               "check sizes with --input")


class _Coupled(Exception):
    """The analysis reached a layer that mixes the axes (a reshape) with sizes that vary."""

    def __init__(self, layer: Layer):
        super().__init__(layer.name)
        self.layer = layer


def _valid_inputs(network: Network, limits: Limits) -> ValidInputs:
    shape = network.input_shape
    axes = (1, 2) if len(shape) == 3 else (0,)
    defaults = {1: "H", 2: "W", 0: "F"}
    dimensions = []
    for axis in axes:
        name = (network.input_names[axis] if network.input_names else None) or defaults[axis]
        bound = max(SCAN, 2 * shape[axis])
        if bound > MAX_SCAN:
            dimensions.append(Dimension.beyond_scan(name, axis, shape[axis]))
            continue
        dimension = _Propagation(network, axis, bound, limits).dimension(name)
        while not dimension.certain and bound < min(max(SCAN_LIMIT, 4 * shape[axis]), MAX_SCAN):
            bound = min(2 * bound, MAX_SCAN)
            dimension = _Propagation(network, axis, bound, limits).dimension(name)
        dimensions.append(dimension)
    return ValidInputs(dimensions)


class _Propagation(Interpreter):
    """All input sizes 1..bound along one axis, pushed through the checked graph together."""

    def __init__(self, network: Network, axis: int, bound: int, limits: Limits = Limits()):
        super().__init__()
        self.network, self.axis, self.bound, self.elements = network, axis, bound, limits.elements
        self.limit: list[Limit | None] = [None] * (bound + 1)  # why each input size fails (None: valid)
        self.limit[0] = Limit("", "", "shape", network.root.span)  # index 0 stands for no size
        self.messages: dict[tuple[int, int], str] = {}  # (rule, size) -> why the layer's rule rejects it
        self.rules: dict[tuple, dict] = {}  # layer or merge signature -> {size(s): output size}
        self.keeps: dict[int, frozenset] = {}  # id(rule) -> input sizes its layers keep unchanged (stride 1)
        self.common_period = 1  # S of the NOTE: a multiple of every stride product

    def dimension(self, name: str) -> Dimension:
        start = _Sizes(list(range(self.bound + 1)), frozenset(range(1, self.bound + 1)), 1)
        self.run(self.network, start)
        valid = [n for n in range(1, self.bound + 1) if self.limit[n] is None]
        period, tail_start, residues = _periodic_tail(valid, self.bound)
        certain = bool(tail_start) and self.common_period % period == 0 and (
            tail_start + 2 * self.common_period <= self.bound)
        if not tail_start:  # bounded: proven when the largest size leaves a period of room (see the NOTE)
            certain = not valid or valid[-1] + self.common_period <= self.bound
        return Dimension(name, self.axis, self.network.input_shape[self.axis], valid, self.bound, period,
                         tail_start, residues, certain, self.limits(valid))

    def limits(self, valid: list[int]) -> list[Limit]:
        """What rules out the sizes next to the valid ones: below the minimum, above the maximum, between."""
        found: list[Limit] = []
        probes = [valid[0] - 1] if valid else []
        if valid:
            gaps = [n + 1 for n, following in zip(valid, valid[1:]) if following != n + 1]
            probes += gaps[:1] + ([valid[-1] + 1] if valid[-1] < self.bound else [])
        for size in probes:
            limit = self.limit[size] if 0 < size <= self.bound else None
            if limit is not None and limit not in found:
                found.append(limit)
        return found

    def position(self, shape: Shape, axes: tuple[str, ...] | None = None) -> int:
        """Where the analysed axis is in `shape` (features for a flat one); a permuted tensor's axes say."""
        if axes is not None:  # NOTE [Axes] in netdsl/layers.py: "H" and "W" are followed through permutes
            return axes.index("HW"[self.axis - 1]) if "HW"[self.axis - 1] in axes else len(shape) - 1
        return self.axis if len(shape) == 3 else 0

    def along(self, shape: Shape, size: int, axes: tuple[str, ...] | None = None) -> Shape:
        """`shape` with its size along the analysed axis (features for a flat one) set to `size`."""
        axis = self.position(shape, axes)
        return shape[:axis] + (size,) + shape[axis + 1:]

    def size_of(self, shape: Shape, axes: tuple[str, ...] | None = None) -> int:
        return shape[self.position(shape, axes)]

    # ---- the walker's hooks ------------------------------------------------------------------
    def layer(self, layer: Layer, sizes: _Sizes) -> _Sizes:
        if REGISTRY[layer.op].couples_axes and len(sizes.distinct) > 1:
            raise _Coupled(layer)
        rule = self.rule(layer)
        kept = self.keeps.get(id(rule))
        if kept is not None and sizes.distinct <= kept:
            return sizes  # a layer like this one kept all these sizes before
        stride = self.stride(layer)
        outputs = {size: rule[size] if size in rule else self.apply(layer, size, rule) for size in sizes.distinct}
        if stride == 1 and all(outputs[size] == size for size in sizes.distinct):
            self.keeps[id(rule)] = sizes.distinct | kept if kept is not None else sizes.distinct
            return sizes  # this layer keeps every size: nothing to recompute
        outputs[0] = 0
        values = [outputs[size] for size in sizes.values]
        failed = [size for size, out in outputs.items() if out <= 0 and size]
        if failed:
            first = min(failed)
            reason = "weights" if outputs[first] < 0 else "shape"
            values = [max(value, 0) for value in values]
            path = f"{self.prefix}{layer.name}"
            self.fail(values, Limit(path, layer.op, reason, layer.span, self.messages.get((id(rule), first), ""),
                                    describe(path, layer)))
        return self.sizes(values, sizes.period * stride)

    def merge(self, merge: Merge, sizes: _Sizes, arms: list[_Sizes]) -> _Sizes:
        """The combinator's own shape rule, at every combination of sizes its input and arms reach."""
        combinator = COMBINATORS[merge.kind]
        if combinator.passthrough:
            return sizes  # the arm's failures count (the walk went through it); the main path goes on
        arm_shapes = [arm[-1].out_shape if arm else merge.in_shape for arm in merge.arms]
        columns = list({id(flow): flow for flow in (sizes, *arms)}.values())  # each distinct flow once
        where = [columns.index(flow) for flow in (sizes, *arms)]
        rows = list(zip(*(column.values for column in columns)))
        known = self.rules.setdefault((merge.kind, self.along(merge.in_shape, None), tuple(where),
                                       tuple(self.along(shape, None) for shape in arm_shapes)), {})
        table = {}
        for row in set(rows):
            if row not in known:
                known[row] = 0 if 0 in row else self.joined(combinator, merge, arm_shapes, tuple(row[i] for i in where))
            table[row] = known[row]
        values = list(map(table.__getitem__, rows))
        period = math.lcm(sizes.period, *(arm.period for arm in arms))
        if values == sizes.values and period == sizes.period:
            return sizes
        self.fail(values, Limit(self.prefix.rstrip("."), combinator.limit_name, "merge", merge.span))
        return self.sizes(values, period)

    def joined(self, combinator, merge: Merge, arm_shapes: list[Shape], key: tuple[int, ...]) -> int:
        """The merge's output size for one input size and its arms' sizes (0: they do not join)."""
        try:
            out_shape = combinator.shape(self.along(merge.in_shape, key[0]),
                                         [self.along(shape, size) for shape, size in zip(arm_shapes, key[1:])])
        except LayerProblem:
            return 0
        return 0 if math.prod(out_shape) > self.elements else self.size_of(out_shape)

    def rule(self, layer: Layer) -> dict[int, int]:
        """The output sizes found so far for layers like this one (same op, arguments and other sizes)."""
        # a layer with weights compares against its own checked input; others depend on the rest only
        shape = layer.in_shape if layer.params else self.along(layer.in_shape, None, layer.axes)
        return self.rules.setdefault((layer.op, repr(layer.args), shape, layer.axes, layer.params > 0), {})

    def apply(self, layer: Layer, size: int, rule: dict[int, int]) -> int:
        """The layer's output size along the axis for input `size`: 0 when it fails, -1 when its weights
        do not fit (another parameter count, as `same_weights` below)."""
        op = REGISTRY[layer.op]
        in_shape = self.along(layer.in_shape, size, layer.axes)
        view = rule_shape(op, in_shape, layer.axes)
        try:
            out_shape = op.shape(view, layer.args)
            if view is not in_shape:  # along the last axis, at every position
                out_shape = in_shape[:-1] + out_shape
        except LayerProblem as problem:  # keep its gist: "conv output would be empty: input [...]" -> before ":"
            self.messages[id(rule), size] = problem.message.split(":")[0].split(",")[0].split(" (")[0]
            out = 0
        else:
            if layer.params and op.count(view, layer.args) != layer.params:
                out = -1
            elif math.prod(out_shape) > self.elements:
                self.messages[id(rule), size] = f"{layer.op} output has more than {self.elements} elements"
                out = 0
            else:
                out = self.size_of(out_shape, layer.out_axes)
        rule[size] = out
        return out

    def stride(self, layer: Layer) -> int:
        stride = layer.args.get("stride", 1)
        if isinstance(stride, tuple):
            return stride[self.axis - 1] if len(layer.in_shape) == 3 else 1
        return stride if isinstance(stride, int) and len(layer.in_shape) == 3 else 1

    # ---- bookkeeping -------------------------------------------------------------------------
    def sizes(self, values: list[int], period: int) -> _Sizes:
        self.common_period = math.lcm(self.common_period, period)
        return _Sizes(values, frozenset(values) - {0}, period)

    def fail(self, values: list[int], limit: Limit) -> None:
        """Records `limit` as the reason for every input size that fails here first."""
        for size, value in enumerate(values):
            if not value and self.limit[size] is None:
                self.limit[size] = limit


def _periodic_tail(valid: list[int], bound: int) -> tuple[int, int, tuple[int, ...]]:
    """(period, start, residues) of the valid sizes' repeating tail; start 0 when they stop early."""
    half = bound // 2
    is_valid = bytearray(bound + 1)
    for n in valid:
        is_valid[n] = 1
    first = is_valid.find(1, half)
    if first < 0:
        return 1, 0, ()
    # a period p maps the tail's first valid size to a valid one, or past the end -- and then past the
    # last valid size too: only those p are tried (trying every p up to bound/4 was quadratic)
    candidates = [n - first for n in valid if n > first] + [max(bound + 1 - first, valid[-1] + 1 - half)]
    for period in (p for p in candidates if p <= bound // 4):
        if is_valid[half:bound + 1 - period] == is_valid[half + period:]:
            break
    else:
        return 1, 0, ()  # no period within the scan: report the sizes as they are
    start = half
    while start > 1 and is_valid[start - 1] == is_valid[start - 1 + period]:
        start -= 1
    residues = tuple(sorted({n % period for n in range(start, start + period) if is_valid[n]}))
    return period, start, residues


def _ranges(name: str, sizes: list[int]) -> str:
    """`227 <= H <= 230`, `H = 32`, `H in 32..33, 40..41` for a finite set of sizes."""
    runs: list[list[int]] = []
    for n in sizes:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    if len(runs) == 1:
        low, high = runs[0]
        return f"{name} = {low}" if low == high else f"{low} <= {name} <= {high}"
    shown = [f"{low}" if low == high else f"{low}..{high}" for low, high in runs]
    if len(shown) > 6:
        shown = shown[:3] + [f"... ({len(sizes)} sizes)"] + shown[-2:]
    return f"{name} in {{{', '.join(shown)}}}"


# ---- checking at another input size ----------------------------------------------------------------

def check_at(program: Program, network: str | None, overrides: dict, limits: Limits,
             input_shape: Shape, memo: dict | None = None, names_checked: bool = False) -> Network:
    """Checks a network at `input_shape` instead of its declared size (see the NOTE below)."""
    decl = program.network(network)
    if not names_checked:
        check_names(program)
    input_shape = tuple(input_shape)
    memo = {} if memo is None else memo
    at_declared = Checker(program, limits, memo=memo)
    try:
        try:
            declared = at_declared.network(decl, overrides)
        except NetDSLError:
            if not at_declared.symbolic:
                raise
            declared = None  # it failed at the probe size; what counts is `input_shape`
        if declared is not None and input_shape == declared.input_shape:
            return declared
        if at_declared.symbolic:  # no size of its own: checked at the one given, nothing to compare
            return Checker(program, limits, memo=memo).network(decl, overrides, input_shape)
        again = Checker(program, limits, replay=at_declared.shortcuts, memo=memo)
        try:
            resized = again.network(decl, overrides, input_shape)
        except NetDSLError as error:
            if again.declared_input is not None:
                note_resized(error, input_shape, again.declared_input)
            raise
        same_weights(declared, resized)
        return resized
    except RecursionError:
        raise nested_too_deeply(decl) from None


def check(program: Program, network: str | None = None, overrides: dict | None = None,
          limits: Limits = Limits(), input_shape: Shape | None = None, memo: dict | None = None,
          names_checked: bool = False) -> Network:
    """Checks a network at its declared input size, or at `input_shape` (`memo`, `names_checked`: see
    `check_program`)."""
    if input_shape is None:
        return check_program(program, network, overrides, limits, memo, names_checked)
    return check_at(program, network, overrides or {}, limits, input_shape, memo, names_checked)


# NOTE: [Checking at another input size]
# `--input` asks whether *this* network accepts another size: the layers keep the weights they
# have at the declared input. So the network is checked at the declared size and at the new
# one, and every layer with parameters must get the input its weights were made for -- a fixed
# `linear` after `flatten` pins the spatial size (AlexNet's 227), the first convolution pins the
# channels -- and no other such layer may appear. A residual's generated shortcut keeps what it
# was at the declared size (identity, or a projection's stride) rather than being fitted anew.
# Parameter-free layers may adapt (a block reading `in.height` may pad differently).
# A symbolic input (`input [3, H, W]`) declares no size: it is checked once, at the given one.

def _who(path: str, layer: Layer) -> str:
    """`path: ` naming a labelled layer in a message located at it; nothing for an unlabelled one
    (its location says where it is, its number is not a name anyone wrote)."""
    return f"{path}: " if layer.labelled else ""


def same_weights(declared: Network, resized: Network) -> None:
    """Raises unless every layer with parameters gets, in `resized`, the input its weights in `declared` take."""
    weights = {path: layer for path, layer in declared.layers() if layer.params}
    for path, layer in resized.layers():
        before = weights.get(path)
        if before is None and layer.params:
            raise note_resized(ShapeError(f"{_who(path, layer)}this {layer.op} has parameters at input "
                                          f"{shape_text(resized.input_shape)} but does not exist at the declared size",
                                          layer.span, None, layer.trace), resized.input_shape, declared.input_shape)
        if before is None or not layer.params:
            continue
        if layer.params != before.params:  # the same layer with another count: its input does not fit
            flat = len(layer.in_shape) == 1
            error = ShapeError(
                f"{_who(path, layer)}{layer.op} has weights for {before.in_shape[0]} input {'features' if flat else 'channels'}, "
                f"but at input {shape_text(resized.input_shape)} it receives {shape_text(layer.in_shape)}",
                layer.span, "insert adaptive_avgpool(...) before 'flatten' to accept other sizes" if flat
                else "the input channels are fixed by the weights", layer.trace)
            raise note_resized(error, resized.input_shape, declared.input_shape)


def note_resized(error: NetDSLError, given: Shape, declared: Shape) -> NetDSLError:
    """Adds to an error found at `--input` that the network was checked at another size than declared."""
    note = f"checked at input {shape_text(given)} instead of the declared {shape_text(declared)}"
    error.hint = f"{error.hint}\n  note: {note}" if error.hint else note
    return error
