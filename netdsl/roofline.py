"""Latency lower bounds (a roofline): checked network + device profile → the least time each node can take.

Per layer and merge, for an inference forward pass at a batch and dtype: the FLOPs it computes,
the bytes it moves (inputs read, output written, weights read), their ratio (arithmetic
intensity) and the time bound `max(FLOPs / peak FLOP/s, bytes / bandwidth)`; a module's bound is
the sum of its nodes', the network's the sum of all. A pass over the checker's graph, reading the
checker's shapes, parameters and MACs; it never imports torch. docs/cost.md defines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .combinators import COMBINATORS
from .cost import DTYPE_BYTES
from .devices import Profile
from .graph import From, Layer, Merge, Module, Network, Node, Tap
from .layers import REGISTRY, Window, rule_shape
from .walk import Interpreter

# NOTE: [What a bound counts]
# FLOPs: 2 x the MACs of convolutions (also transposed) and linear layers, the operations
# FlopCounterMode counts; every other op counts 0 FLOPs (an element-wise op, a normalization, a
# pooling or a sum does 1-10 operations per element it moves 8 bytes for, far below the ridge
# point of any profile here, so its time bound is its bytes either way, and counting none keeps it
# a lower bound). Bytes, at the dtype: the input elements the op reads — all of them, but for a
# window whose stride skips positions (a 1x1 convolution with stride 2 reads a quarter of a map)
# only those its windows touch (`LayerDef.reach`) — plus its output, plus its parameters (once per
# batch); a view or an op that is the identity in inference (flatten, dropout: `LayerDef.is_view`,
# `eval_identity`) moves nothing; a merge reads each arm's result and writes its output (a
# residual sum: two maps in, one out; a concatenation: every branch in, the whole out). The bound
# is for the layers run one after another, as the emitted module runs them: fusion (torch.compile,
# `compile --optimize` folding batch norm into convolutions) removes bytes, so `fused_floor`
# gives the bound that holds whatever is fused: every FLOP at peak, the weights, the input and the
# output moved once.


@dataclass(frozen=True)
class Bound:
    """The least time of a node (a layer, a merge) or of the nodes inside a module."""

    flops: int
    bytes: int
    seconds: float
    compute_seconds: float = 0.0  # of `seconds`, the nodes whose FLOPs bound them
    memory_seconds: float = 0.0  # of `seconds`, the nodes whose bytes bound them
    compute_nodes: int = 0
    memory_nodes: int = 0

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte moved; None for a node that moves nothing."""
        return self.flops / self.bytes if self.bytes else None

    @property
    def limit(self) -> str | None:
        """"compute" or "memory": which bounds it (for a module, which bounds more of its time)."""
        if not self.seconds:
            return None
        return "compute" if self.compute_seconds > self.memory_seconds else "memory"

    def __add__(self, other: "Bound") -> "Bound":
        return Bound(self.flops + other.flops, self.bytes + other.bytes, self.seconds + other.seconds,
                     self.compute_seconds + other.compute_seconds, self.memory_seconds + other.memory_seconds,
                     self.compute_nodes + other.compute_nodes, self.memory_nodes + other.memory_nodes)

    def to_json(self) -> dict:
        return {"flops": self.flops, "bytes": self.bytes, "intensity": self.intensity, "seconds": self.seconds,
                "limit": self.limit}


NO_BOUND = Bound(0, 0, 0.0)


@dataclass
class Roofline:
    """`roofline[node]`: the bound of every node of `network` on `profile` at `dtype` and `batch`;
    `total` the network's (auxiliary heads, which run in training only, excluded)."""

    network: Network
    profile: Profile
    dtype: str
    batch: int
    nodes: dict[int, Bound]

    def __getitem__(self, node: Node) -> Bound:
        return self.nodes.get(id(node), NO_BOUND)

    @property
    def total(self) -> Bound:
        return self[self.network.root]

    @property
    def fused_floor(self) -> float:
        """Seconds no schedule goes below: every FLOP at peak, or the weights, the input and the output
        moved once, whichever is slower (NOTE: [What a bound counts])."""
        size = DTYPE_BYTES[self.dtype]
        network = self.network
        moved = size * (self.network.params + self.batch * (math.prod(network.input_shape)
                                                             + math.prod(network.output_shape)))
        return max(self.total.flops / self.profile.peak(self.dtype), moved / self.profile.bandwidth_for(moved))

    def to_json(self) -> dict:
        profile = self.profile
        return {"profile": profile.name, "device": profile.label, "source": profile.source, "dtype": self.dtype,
                "batch": self.batch, "peak_flops": profile.peak(self.dtype), "bandwidth": profile.bandwidth,
                "seconds": self.total.seconds, "fused_floor_seconds": self.fused_floor,
                "flops": self.total.flops, "bytes": self.total.bytes,
                "compute_bound_nodes": self.total.compute_nodes, "memory_bound_nodes": self.total.memory_nodes,
                "meaning": BOUND_MEANING}


BOUND_MEANING = ("a lower bound, not a prediction: each layer at the device's peak FLOP/s or memory bandwidth, "
                 "whichever is slower, one layer after another; launch overheads and kernels below peak only add time")


def roofline(network: Network, profile: Profile, dtype: str = "float32", batch: int = 1) -> Roofline:
    """The latency bound of every node of `network` on `profile` (an `OptionError` where the profile
    has no peak for `dtype`)."""
    walk = _Walk(profile, profile.peak(dtype), DTYPE_BYTES[dtype], batch)
    return Roofline(network, profile, dtype, batch, walk.whole(network))


def total(network: Network, profile: Profile, dtype: str, batch: int, memo: dict) -> Bound:
    """`roofline(...).total` alone, for many networks (a sweep's variants): a copy of a block
    instance already walked in `memo` (the same `Module.template`, NOTE [Elaboration memo]) adds
    that instance's bound without walking it again. Its bound is a function of the template, whose
    shapes, parameters and MACs every copy shares, and of the profile, dtype and batch, which a
    memo is for one of (a `ValueError` for another); a block instance with a tensor argument or a
    tap has no template."""
    if memo.setdefault(_FOR, (profile, dtype, batch)) != (profile, dtype, batch):
        raise ValueError(f"this memo is for {memo[_FOR][0].name}, {memo[_FOR][1]}, batch {memo[_FOR][2]}")
    walk = _Walk(profile, profile.peak(dtype), DTYPE_BYTES[dtype], batch, memo)
    return walk.whole(network)[id(network.root)]


_FOR = object()  # a `total` memo's key for the profile, dtype and batch it holds bounds for


def moved_elements(layer: Layer) -> int:
    """Elements one sample's inference pass through `layer` reads and writes (weights aside):
    NOTE: [What a bound counts]."""
    op = REGISTRY[layer.op]
    view = rule_shape(op, layer.in_shape, layer.axes)
    if op.eval_identity or op.is_view(view, layer.args):
        return 0
    return _read(layer, view) + math.prod(layer.out_shape)


def _read(layer: Layer, view) -> int:
    """The input elements `layer`'s windows touch: every one, unless integer windows skip some."""
    op = REGISTRY[layer.op]
    reach = op.reach(view, layer.args) if view is layer.in_shape else None
    if not isinstance(reach, tuple) or len(layer.in_shape) != 3 or len(layer.out_shape) != 3:
        return math.prod(layer.in_shape)
    channels, *sizes = layer.in_shape
    touched = [_touched(size, window, out) for size, window, out in zip(sizes, reach, layer.out_shape[1:])]
    return channels * math.prod(touched)


def _touched(size: int, window: Window, out: int) -> int:
    """Positions of an axis of `size` that `out` windows read (all of them for a fractional window)."""
    if any(isinstance(value, Fraction) for value in (window.stride, window.pad, window.dilation)):
        return size
    positions = {i * window.stride - window.pad + t * window.dilation for i in range(out) for t in range(window.kernel)}
    return sum(0 <= p < size for p in positions)


class _Walk(Interpreter):
    """Pushes the current tensor's elements (per sample) along the dataflow; records each node's
    bound and sums them into every enclosing module (`open`/`close` keep the sums)."""

    def __init__(self, profile: Profile, peak: float, size: int, batch: int, memo: dict | None = None):
        super().__init__()
        self.profile, self.peak, self.size, self.batch = profile, peak, size, batch
        self.nodes: dict[int, Bound] = {}
        self.sums: list[Bound] = []
        self.memo = memo  # `total`'s: template → (elements out, bound), for the copies of a block instance

    def whole(self, network: Network) -> dict[int, Bound]:
        """Every node's bound (with a memo, not those inside a remembered instance's copies), the root's too."""
        self.open()
        self.run(network, math.prod(network.input_shape))
        self.nodes[id(network.root)] = self.close()
        return self.nodes

    def open(self) -> None:
        self.sums.append(NO_BOUND)

    def close(self) -> Bound:
        return self.sums.pop()

    def leaf(self, node: Node, flops: int, moved: int, weights: int) -> None:
        """A node computing `flops` and moving `moved` elements per sample and `weights` once."""
        flops, moved = self.batch * flops, self.size * (self.batch * moved + weights)
        compute, memory = flops / self.peak, moved / self.profile.bandwidth_for(moved) if moved else 0.0
        seconds = max(compute, memory)
        bound = (NO_BOUND if not seconds else
                 Bound(flops, moved, seconds, compute_seconds=seconds, compute_nodes=1) if compute > memory else
                 Bound(flops, moved, seconds, memory_seconds=seconds, memory_nodes=1))
        self.nodes[id(node)] = bound
        self.sums[-1] += bound

    def layer(self, layer: Layer, elements: int) -> int:
        self.leaf(layer, 2 * layer.macs, moved_elements(layer), layer.params)
        return math.prod(layer.out_shape)

    def module(self, module: Module, elements: int) -> int:
        remembered = self.memo is not None and module.template is not None
        if remembered and module.template in self.memo:
            out, bound = self.memo[module.template]
        else:
            self.open()
            out = self.module_body(module, elements)
            bound = self.close()
            if remembered:
                self.memo[module.template] = out, bound
        self.nodes[id(module)] = bound
        self.sums[-1] += bound
        return out

    def arm(self, merge: Merge, index: int, nodes: list[Node], elements: int) -> tuple[int, Bound]:
        combinator = COMBINATORS[merge.kind]
        if combinator.arm_input is not None:  # the arm reads a part of the input (a split's channels)
            elements = math.prod(combinator.arm_input(merge.in_shape, index, len(merge.arms)))
        self.open()
        out = self.chain(nodes, elements)
        return out, self.close()

    def merge(self, merge: Merge, elements: int, arms: list[tuple[int, Bound]]) -> int:
        if COMBINATORS[merge.kind].passthrough:  # a side computation of training (an auxiliary head)
            return elements
        for _, bound in arms:
            self.sums[-1] += bound
        self.leaf(merge, 0, sum(out for out, _ in arms) + math.prod(merge.out_shape), 0)
        return math.prod(merge.out_shape)

    def tap(self, tap: Tap, elements: int) -> int:
        return elements

    def from_(self, node: From, elements: int, wire: int) -> int:
        return math.prod(node.out_shape)  # a wire, or a view of its channels
