"""The cost model: annotated `graph.Network` → the cost of every node and of the whole network.

Per node: output shape, parameters (and how many of them are biases), multiply-accumulates,
activation memory (output elements), receptive field and effective stride of its output, and
depth (weight layers on the longest path from the input). A pure pass over the checker's graph:
shapes, parameter counts and MACs are the checker's own; this adds what needs the dataflow
(receptive fields, depth, activation totals). It never imports torch. docs/cost.md defines the units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from .combinators import COMBINATORS
from .graph import From, Layer, Merge, Module, Network, Node, Shape, Tap, describe
from .layers import GLOBAL, GLOBAL_STATISTICS, REGISTRY, Window, rule_shape
from .walk import Interpreter

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


# NOTE: [Fractional strides]
# An upsampling layer (`conv_transpose`, `upsample`) has a stride below one: output i of a
# transposed convolution with kernel k, stride s, padding p, dilation d reads the input positions
# j with i = j*s - p + t*d (t < k), all of them between (i + p - (k-1)*d) / s and (i + p) / s. Its
# `Window` says so with fractions (stride 1/s, pad ((k-1)*d - p) / s, dilation d/s), and an
# `Axis` then carries fractional `jump`, `start` and `size`: the real interval
# [i*jump + start, i*jump + start + size - 1], whose integer positions contain every input
# position output i depends on. The rule for a window is the same with fractions (a union of
# intervals), so the interval is exact while every stride is an integer and a superset after a
# fractional one: not every integer in it is read (k = 3, s = 2 reads one input for even outputs,
# two for odd ones), and with d and s not coprime some outputs read none. `Field.size` reports the
# most integer positions any output's interval holds; `Field.stride` the jump (0.5 after a 2x
# upsampling of the input). tests/test_ops.py measures both against gradients.

def _exact(value: "int | Fraction") -> "int | Fraction":
    """An integral Fraction as an int, so that integer fields stay integers."""
    return int(value) if isinstance(value, Fraction) and value.denominator == 1 else value


@dataclass(frozen=True)
class Axis:
    """Receptive field along one spatial axis: output position i sees the input positions
    `i * jump + start` to `i * jump + start + size - 1` (positions outside the input are padding).
    Integers, except after an upsampling layer: see the NOTE [Fractional strides]."""

    size: int | Fraction
    jump: int | Fraction  # effective stride: input positions between neighbouring outputs
    start: int | Fraction

    @property
    def end(self) -> int | Fraction:
        return self.start + self.size - 1

    def span(self, position: int) -> tuple[int, int]:
        """First and last input position that output `position` may see."""
        return math.ceil(position * self.jump + self.start), math.floor(position * self.jump + self.end)

    @property
    def positions(self) -> int:
        """The most input positions one output sees: `size`, or for a fractional field the most
        integers any output's interval holds (the pattern repeats every `jump.denominator` outputs)."""
        if isinstance(self.size, int) and isinstance(self.jump, int) and isinstance(self.start, int):
            return self.size
        period = self.jump.denominator if isinstance(self.jump, Fraction) else 1
        return max(last - first + 1 for first, last in map(self.span, range(period)))

    def through(self, window: Window) -> "Axis":
        """The field after a layer reading `window` of this axis."""
        extent = (window.kernel - 1) * window.dilation
        return Axis(_exact(self.size + extent * self.jump), _exact(self.jump * window.stride),
                    _exact(self.start - window.pad * self.jump))

    @staticmethod
    def union(axes: list["Axis"]) -> "Axis":
        # NOTE: branches merged by add or concat have equal sizes, hence (in every network we know)
        # equal jumps; if they differ, the larger is kept and the span is that of output 0.
        start = min(a.start for a in axes)
        return Axis(_exact(max(a.end for a in axes) - start + 1), max(a.jump for a in axes), start)


@dataclass(frozen=True)
class Field:
    """A node's receptive field: `axes` (height, width) through local paths, None when every path
    went through a global operation; `whole` when some path pools globally (a linear layer,
    global pooling, a squeeze-excitation gate) or normalizes with statistics of the whole map (group
    and instance normalization), so that every input position reaches the output."""

    axes: tuple[Axis, Axis] | None
    whole: bool = False

    @property
    def size(self) -> tuple[int, int] | None:
        return (self.axes[0].positions, self.axes[1].positions) if self.axes else None

    @property
    def stride(self) -> tuple[int | float, int | float] | None:
        """The effective stride per axis; a float below one after upsampling (NOTE [Fractional strides])."""
        return tuple(a.jump if isinstance(a.jump, int) else float(a.jump) for a in self.axes) if self.axes else None

    def through(self, reach: "tuple[Window, Window] | str | None") -> "Field":
        """The field after a layer whose `LayerDef.reach` is `reach`."""
        if reach is None:
            return self
        if reach == GLOBAL:
            return Field(None, whole=True)
        if reach == GLOBAL_STATISTICS:  # the local field goes on, and every position reaches the output
            return Field(self.axes, whole=True)
        axes = tuple(axis.through(window) for axis, window in zip(self.axes, reach)) if self.axes else None
        return Field(axes, self.whole)

    @staticmethod
    def union(fields: list["Field | None"]) -> "Field | None":
        if any(f is None for f in fields):
            return None
        local = [f.axes for f in fields if f.axes is not None]
        axes = tuple(Axis.union(list(parts)) for parts in zip(*local)) if local else None
        return Field(axes, any(f.whole for f in fields))

    def to_json(self) -> dict:
        return {"size": list(self.size) if self.axes else None, "stride": list(self.stride) if self.axes else None,
                "whole_input": self.whole}


PIXEL = Field((Axis(1, 1, 0), Axis(1, 1, 0)))  # an input position sees itself


@dataclass(frozen=True)
class Cost:
    """One node's numbers (one sample). For modules and combinators, sums over what they contain."""

    out_shape: Shape
    params: int  # trainable parameters; a reused (shared) module is counted at its first use only
    biases: int  # of `params`, the additive ones: conv/linear biases and batch norm's shift
    macs: int  # multiply-accumulates of conv and linear layers
    elements: int  # the output tensor's elements
    activations: int  # elements of every tensor computed inside, this node's output included
    field: Field | None  # receptive field of the output; None for a network whose input is not [C, H, W]
    depth: int  # weight layers (conv, linear) on the longest path from the network input to this output
    layers_deep: int  # weight layers it adds to its input's depth (ResNet-50's stages: 9, 12, 18, 9)

    @property
    def weights(self) -> int:
        """Parameters without biases (what the course notes' VGG table counts)."""
        return self.params - self.biases


@dataclass(frozen=True)
class FeatureMap:
    """The final feature map: the tensor entering the first flatten or adaptive pool on the
    network's main path (or the network's output when there is none)."""

    shape: Shape
    field: Field | None
    consumer: str | None  # dotted path of the layer that reads it; None: it is the network's output
    consumer_name: str | None = None  # how messages name that layer (`graph.describe`)

    def to_json(self) -> dict | None:
        """`{"size", "stride", "whole_input", "at", "shape"}`; None without a spatial input."""
        if self.field is None:
            return None
        return dict(self.field.to_json(), at=self.consumer, shape=list(self.shape))


@dataclass(frozen=True)
class Totals:
    params: int  # auxiliary heads included: they are parameters of the model
    biases: int
    macs: int  # one inference forward pass (eval: auxiliary heads do not run)
    aux_macs: int  # the auxiliary heads, run in training only
    activations: int  # elements of every tensor an inference forward pass computes, input excluded
    input_elements: int
    depth: int  # weight layers on the longest path from input to output

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def weights(self) -> int:
        return self.params - self.biases


@dataclass
class Costs:
    """`costs[node]` for every node of `network`, the final feature map and the totals."""

    network: Network
    nodes: dict[int, Cost]
    feature_map: FeatureMap | None
    totals: Totals = field(init=False)

    def __getitem__(self, node: Node) -> Cost:
        return self.nodes[id(node)]

    @property
    def input_field(self) -> Field | None:
        return PIXEL if len(self.network.input_shape) == 3 else None

    def __post_init__(self) -> None:
        root = self[self.network.root]
        aux = [self[node] for node in self.network.aux_heads]
        self.totals = Totals(
            params=root.params, biases=root.biases, macs=root.macs - sum(c.macs for c in aux),
            aux_macs=sum(c.macs for c in aux), activations=root.activations - sum(c.activations for c in aux),
            input_elements=math.prod(self.network.input_shape), depth=root.depth)


def analyse(network: Network) -> Costs:
    """Every node's cost, in one walk along the dataflow."""
    walk = _Walk(_feature_end(network.root))
    start = _State(PIXEL if len(network.input_shape) == 3 else None, 0)
    end = walk.run(network, start)
    walk.record(network.root, start, end)
    feature = walk.feature
    if feature is None and len(network.output_shape) == 3:
        feature = FeatureMap(network.output_shape, end.field, None)
    return Costs(network, walk.costs, feature)


def byte_size(elements: int, dtype: str) -> int:
    return elements * DTYPE_BYTES[dtype]


def _feature_end(module: Module) -> tuple[str, Layer] | None:
    """The first layer ending the feature maps (`LayerDef.feature_end`: flatten, adaptive pooling) on
    the main path: in the network's modules, not inside a merge's arms."""
    for path, node in _main_path(module):
        if node.walk_kind == "layer" and REGISTRY[node.op].feature_end:
            return path, node
    return None


def _main_path(module: Module, prefix: str = ""):
    for node in module.body:
        if node.walk_kind == "layer":
            yield f"{prefix}{node.name}", node
        elif node.walk_kind == "module":
            yield from _main_path(node, f"{prefix}{node.name}.")


@dataclass(frozen=True)
class _State:
    """What flows along an edge: the current tensor's receptive field and depth."""

    field: Field | None
    depth: int

    @staticmethod
    def union(states: list["_State"]) -> "_State":
        return _State(Field.union([s.field for s in states]), max(s.depth for s in states))


class _Walk(Interpreter):
    def __init__(self, feature_end: tuple[str, Layer] | None):
        super().__init__()
        self.costs: dict[int, Cost] = {}
        self.feature_end = feature_end
        self.feature: FeatureMap | None = None

    def layer(self, layer: Layer, state: _State) -> _State:
        if self.feature_end is not None and layer is self.feature_end[1]:
            self.feature = FeatureMap(layer.in_shape, state.field, self.feature_end[0], describe(*self.feature_end))
        op = REGISTRY[layer.op]
        view = rule_shape(op, layer.in_shape, layer.axes)
        reach = None if view is not layer.in_shape else op.reach(view, layer.args)  # per position: position-wise
        out = _State(state.field.through(reach) if state.field else None, state.depth + op.weight)
        elements = math.prod(layer.out_shape)
        biases = 0 if layer.shared else op.biases(view, layer.args)
        self.costs[id(layer)] = Cost(layer.out_shape, layer.params, biases, layer.macs, elements, elements,
                                     out.field, out.depth, out.depth - state.depth)
        return out

    def module(self, module: Module, state: _State) -> _State:
        out = self.module_body(module, state)
        self.record(module, state, out)
        return out

    def record(self, module: Module, state: _State, out: _State) -> None:
        self.costs[id(module)] = Cost(
            module.out_shape, module.params, sum(self.costs[id(c)].biases for c in module.children()),
            module.macs, math.prod(module.out_shape), self._activations(module.body), out.field, out.depth,
            out.depth - state.depth)

    def merge(self, merge: Merge, start: _State, ends: list[_State]) -> _State:
        """A merge's output: the union of its arms (its input, for a passthrough); its numbers: the
        sums of its contents, and its own output (none for a passthrough, whose output is its input)."""
        passthrough = COMBINATORS[merge.kind].passthrough
        out = start if passthrough else _State.union(ends)
        inner = [self.costs[id(n)] for arm in merge.arms for n in arm]
        elements = math.prod(merge.out_shape)
        self.costs[id(merge)] = Cost(
            merge.out_shape, sum(c.params for c in inner), sum(c.biases for c in inner), sum(c.macs for c in inner),
            elements, sum(c.activations for c in inner) + (0 if passthrough else elements), out.field, out.depth,
            out.depth - start.depth)
        return out

    def tap(self, tap: Tap, state: _State) -> _State:
        self.marker(tap, state)
        return state

    def from_(self, node: From, state: _State, wire: _State) -> _State:
        self.marker(node, wire)
        return wire

    def marker(self, node: Tap | From, state: _State) -> None:
        self.costs[id(node)] = Cost(node.out_shape, 0, 0, 0, math.prod(node.out_shape), 0, state.field,
                                    state.depth, 0)

    def _activations(self, nodes: list[Node]) -> int:
        return sum(self.costs[id(n)].activations for n in nodes)
