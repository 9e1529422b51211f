"""The cost model: annotated `graph.Network` → the cost of every node and of the whole network.

Per node: output shape, parameters (and how many of them are biases), multiply-accumulates,
activation memory (output elements), receptive field and effective stride of its output, depth
(weight layers on the longest path from the input), and for training the bytes autograd keeps
for backward and the backward pass's MACs. A pure pass over the checker's graph: shapes,
parameter counts and MACs are the checker's own; this adds what needs the dataflow (receptive
fields, depth, activation totals, which tensors share storage). It never imports torch.
docs/cost.md defines the units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from .combinators import COMBINATORS
from .devices import SHIPPED
from .graph import From, Layer, Merge, Module, Network, Node, Shape, Tap, describe, nested
from .inplace import InplacePlan
from .layers import GLOBAL, GLOBAL_STATISTICS, REGISTRY, Saved, Step, Window, rule_shape
from .walk import Interpreter

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "bool": 1}
AMP_DTYPES = ("bfloat16", "float16")  # what `--amp` accepts: autocast's low-precision dtypes
DEVICES = ("cuda", "cpu")  # whose autocast rules and dropout masks a training step follows
# optimizer -> (float32 tensors it keeps per parameter, float32 scalars per parameter tensor):
# SGD without momentum keeps nothing, with momentum a buffer; Adam and AdamW two moments and a step count.
OPTIMIZERS = {"sgd": (0, 0), "momentum": (1, 0), "adam": (2, 1), "adamw": (2, 1)}


# NOTE: [Saved for backward]
# A training forward pass keeps, for backward, the tensors each op's gradient needs: the op's
# `LayerDef.saves` rule names them (its input, its output, its weight, or tensors of its own such
# as batch norm's statistics, max pooling's indices, dropout's mask) and a combinator's
# `saves_arms` the arms' results (the gate's product). What counts is storage, as in memory:
# the walk carries, with each tensor, the storage it lives in (`_Storage`), and a storage saved
# by two ops is counted once. A view (flatten, a split's chunks, dropout with p = 0) is its
# input's storage; an op run in place (the emitter's plan, netdsl/inplace.py) writes into its
# input's, and where it saves its input autograd keeps a copy of the original. Under autocast,
# an op on the low-precision list reads a cast copy of a float32 input (a new storage, one per
# reader) and of its weight, and returns the low dtype; an op on the float32 list casts up;
# the others follow their input (batch norm runs on a bfloat16 input as it is, its statistics in
# float32), and a sum, product or concatenation takes the widest dtype of its inputs. Sizes are
# per sample plus a fixed part (batch norm's statistics, weight copies), so memory is affine in
# the batch. tests/test_train.py compares every network with `saved_tensors_hooks`.


@dataclass(frozen=True)
class Precision:
    """How a training step runs: in float32, or under autocast to `amp` by `device`'s rules."""

    amp: str | None = None  # None, "bfloat16" or "float16"
    device: str = "cuda"

    @property
    def label(self) -> str:
        return f"{f'autocast {self.amp}' if self.amp else 'float32'} ({self.device} rules)"  # dropout masks differ too


@dataclass(frozen=True)
class Memory:
    """Bytes: `per_sample` of them for every sample of the batch, and `fixed` whatever the batch."""

    per_sample: int = 0
    fixed: int = 0

    def at(self, batch: int) -> int:
        return self.per_sample * batch + self.fixed

    def __add__(self, other: "Memory") -> "Memory":
        return Memory(self.per_sample + other.per_sample, self.fixed + other.fixed)

    def __sub__(self, other: "Memory") -> "Memory":
        return Memory(self.per_sample - other.per_sample, self.fixed - other.fixed)

    @staticmethod
    def total(parts) -> "Memory":
        return sum(parts, Memory())


NO_MEMORY = Memory()


@dataclass(eq=False)
class _Storage:
    """One storage of a training forward pass; its identity is the object's."""

    elements: int  # per sample
    fixed: int  # elements whatever the batch
    dtype: str

    @property
    def memory(self) -> Memory:
        size = DTYPE_BYTES[self.dtype]
        return Memory(self.elements * size, self.fixed * size)


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
    """One node's numbers (one sample). For a module, sums over what it contains; for a merge, its
    own: its output and what it saves (its arms' nodes have theirs)."""

    out_shape: Shape
    params: int  # trainable parameters; a reused (shared) module is counted at its first use only
    biases: int  # of `params`, the additive ones: conv/linear biases and batch norm's shift
    macs: int  # multiply-accumulates of conv and linear layers
    elements: int  # the output tensor's elements
    activations: int  # elements of every tensor computed inside, this node's output included
    field: Field | None  # receptive field of the output; None for a network whose input is not [C, H, W]
    depth: int  # weight layers (conv, linear) on the longest path from the network input to this output
    layers_deep: int  # weight layers it adds to its input's depth (ResNet-50's stages: 9, 12, 18, 9)
    saved: Memory = NO_MEMORY  # bytes autograd keeps for backward, each storage at the first node saving it
    backward_macs: int = 0  # input- and weight-gradient MACs of a training step's backward pass

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


@dataclass(frozen=True)
class Training:
    """A training step (docs/cost.md, "Training"): its memory in bytes at a batch size and
    optimizer, and its multiply-accumulates. The loss uses every output, auxiliary heads too."""

    precision: Precision
    params: int
    param_tensors: int
    buffers: int  # bytes: batch norm's running statistics
    saved: Memory  # activations autograd keeps for backward, each storage once
    live: Memory  # the input batch and the output, where no op saved them
    forward_macs: int  # one training forward pass, auxiliary heads included
    backward_macs: int

    def optimizer_state(self, optimizer: str) -> int:
        """Bytes of state `torch.optim` keeps after a step (float32, as the parameters)."""
        copies, scalars = OPTIMIZERS[optimizer]
        return 4 * (copies * self.params + scalars * self.param_tensors)

    def memory(self, batch: int, optimizer: str) -> dict[str, int]:
        """The parts of the peak at the end of the forward pass, and their sum ("peak")."""
        parts = {"params": 4 * self.params, "grads": 4 * self.params, "optimizer": self.optimizer_state(optimizer),
                 "buffers": self.buffers, "saved": self.saved.at(batch), "input_output": self.live.at(batch)}
        return dict(parts, peak=sum(parts.values()))

    def fixed(self, optimizer: str) -> int:
        """The bytes that do not grow with the batch."""
        return self.memory(0, optimizer)["peak"]

    def fit(self, capacity: int, optimizer: str) -> int:
        """The largest batch whose peak fits in `capacity` bytes (0: not even one sample). The
        peak is affine in the batch, so this solves for it, then checks the answer both ways."""
        fixed, per_sample = self.fixed(optimizer), (self.saved + self.live).per_sample
        batch = max((capacity - fixed) // per_sample, 0)
        while self.memory(batch + 1, optimizer)["peak"] <= capacity:
            batch += 1
        while batch and self.memory(batch, optimizer)["peak"] > capacity:
            batch -= 1
        return batch

    @property
    def macs(self) -> int:
        return self.forward_macs + self.backward_macs

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_json(self, batch: int, optimizer: str, capacity: int | None = None) -> dict:
        """`summary --train --json`'s "training": bytes at `batch`, MACs and FLOPs of the whole batch,
        and with `capacity` (bytes) the largest batch that fits."""
        memory = self.memory(batch, optimizer)
        report = {
            "batch": batch, "optimizer": optimizer, "amp": self.precision.amp, "device_rules": self.precision.device,
            "memory": {**{f"{name}_bytes": size for name, size in memory.items() if name != "peak"},
                       "peak_bytes": memory["peak"], "per_sample_bytes": (self.saved + self.live).per_sample,
                       "fixed_bytes": self.fixed(optimizer), "includes": PEAK_INCLUDES, "excludes": PEAK_EXCLUDES},
            "param_tensors": self.param_tensors,
            "macs": {"forward": batch * self.forward_macs, "backward": batch * self.backward_macs,
                     "total": batch * self.macs},
            "flops": batch * self.flops,
        }
        if capacity is not None:
            report["fit"] = {"capacity_bytes": capacity, "batch": self.fit(capacity, optimizer)}
        return report


PEAK_INCLUDES = ("parameters", "gradients", "optimizer state", "buffers", "activations saved for backward",
                 "the input batch and the output")
PEAK_EXCLUDES = ("allocator rounding and caching", "cuDNN and cuBLAS workspaces", "the CUDA context",
                 "temporaries inside an op and during backward", "the autocast cache's weight copies no op saves")
# Memory of common accelerators as their datasheets give it (read as GiB): `--fit h100`. The
# devices' table (netdsl/devices.json) holds it with their peak FLOP/s and bandwidth (`--bound h100`).
DEVICE_MEMORY = {name: profile.memory_gib for name, profile in SHIPPED.items() if profile.memory_gib}


@dataclass
class Costs:
    """`costs[node]` for every node of `network`, the final feature map, the totals and a
    training step's numbers (at `training.precision`)."""

    network: Network
    nodes: dict[int, Cost]
    feature_map: FeatureMap | None
    training: Training
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


def analyse(network: Network, precision: Precision = Precision()) -> Costs:
    """Every node's cost, in one walk along the dataflow; the training numbers at `precision`."""
    _known(precision)
    walk = _Walk(network, _feature_end(network.root), precision)
    start = _State(PIXEL if len(network.input_shape) == 3 else None, 0, _input_storage(network), False)
    end = walk.run(network, start)
    walk.record(network.root, start, end)
    feature = walk.feature
    if feature is None and len(network.output_shape) == 3:
        feature = FeatureMap(network.output_shape, end.field, None)
    root = walk.costs[id(network.root)]
    state = [_state_of(layer) for _, layer in network.layers()]
    training = Training(
        precision, params=network.params,
        param_tensors=sum(tensors for tensors, _ in state), buffers=sum(size for _, size in state),
        saved=root.saved, live=_live(walk, start, end), forward_macs=root.macs, backward_macs=root.backward_macs)
    return Costs(network, walk.costs, feature, training)


def training(network: Network, precision: Precision = Precision(), memo: dict | None = None) -> Training:
    """`analyse(network, precision).training`, the same numbers, without the other costs: what a
    sweep reads. `memo`, kept between the variants of a sweep, remembers what each copy of a
    block instance does to a training step (NOTE [Training memo])."""
    _known(precision)
    walk = _TrainingWalk(network, precision, {} if memo is None else memo)
    start = _State(None, 0, _input_storage(network), False)  # (no receptive fields)
    end = walk.run(network, start)
    return Training(precision, params=network.params, param_tensors=walk.tensors, buffers=walk.buffers,
                    saved=walk.saved, live=_live(walk, start, end), forward_macs=network.root.macs,
                    backward_macs=walk.backward)


def _state_of(layer: Layer) -> tuple[int, int]:
    """A layer's parameter tensors, and the bytes of its buffers (batch norm's running statistics)."""
    op = REGISTRY[layer.op]
    return (op.tensors(layer.in_shape, layer.args),
            sum(elements * DTYPE_BYTES[dtype] for elements, dtype in op.buffers(layer.in_shape, layer.args)))


def _known(precision: Precision) -> None:
    if precision.amp not in (None, *AMP_DTYPES) or precision.device not in DEVICES:
        raise ValueError(f"no such precision: {precision}")


def _input_storage(network: Network) -> "_Storage":
    return _Storage(math.prod(network.input_shape), 0, "float32")


def _live(walk: "_Walk", start: "_State", end: "_State") -> Memory:
    """The input batch and the output, where no op saved them."""
    return Memory.total(s.memory for s in {id(s): s for s in (start.storage, end.storage)}.values()
                        if id(s) not in walk.kept)


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
    """What flows along an edge: the current tensor's receptive field and depth, and in a training
    pass its storage and whether it needs a gradient."""

    field: Field | None
    depth: int
    storage: _Storage
    grad: bool


class _Walk(Interpreter):
    def __init__(self, network: Network, feature_end: tuple[str, Layer] | None, precision: Precision):
        super().__init__()
        self.costs: dict[int, Cost] = {}
        self.feature_end = feature_end
        self.feature: FeatureMap | None = None
        self.precision = precision
        self.inplace = InplacePlan(network)
        self.kept: dict[int, _Storage] = {}  # the storages saved for backward (holding them keeps ids unique)

    def keep(self, storage: _Storage | None) -> Memory:
        """Records `storage` as saved for backward; its bytes the first time, nothing after."""
        if storage is None or id(storage) in self.kept:
            return NO_MEMORY
        self.kept[id(storage)] = storage
        return storage.memory

    def layer(self, layer: Layer, state: _State) -> _State:
        if self.feature_end is not None and layer is self.feature_end[1]:
            self.feature = FeatureMap(layer.in_shape, state.field, self.feature_end[0], describe(*self.feature_end))
        op = REGISTRY[layer.op]
        view = rule_shape(op, layer.in_shape, layer.axes)
        # an op along the last axis of a permuted tensor applies at every position: position-wise in
        # space, its rules seeing one position's features, its own tensors and MACs once per position
        per_position = view is not layer.in_shape
        positions = math.prod(layer.in_shape[:-1]) if per_position else 1
        view_out = (layer.out_shape[-1],) if per_position else layer.out_shape
        reach = None if per_position else op.reach(view, layer.args)
        amp, device = self.precision.amp, self.precision.device
        rule = op.autocast_rule(device) if amp else None
        source = state.storage
        compute = amp if rule == "low" else "float32" if rule in ("float32", "widen") else source.dtype
        read = (source if rule in (None, "widen") or source.dtype == compute
                else _Storage(math.prod(layer.in_shape), 0, compute))  # autocast's cast copy
        inplace = self.inplace(self.modules[-1], layer)
        storage = (source if op.is_view(view, layer.args) else read if inplace
                   else _Storage(math.prod(layer.out_shape), 0, compute))
        biases = 0 if layer.shared else op.biases(view, layer.args)
        saved = NO_MEMORY
        for item in op.saves(view, view_out, layer.args, Step(inplace, state.grad)):
            if per_position and item.tensor == "new":
                item = Saved(item.tensor, item.elements * positions, item.fixed, item.dtype)
            saved += self.keep(self.saved_storage(item, layer, biases, read, storage, compute, inplace, rule))
        input_grad, weight_grad = (macs * positions for macs in
                                   op.backward_macs(view, view_out, layer.args, state.grad))
        out = _State(state.field.through(reach) if state.field else None, state.depth + op.weight, storage,
                     state.grad or layer.params > 0)
        elements = math.prod(layer.out_shape)
        self.costs[id(layer)] = Cost(layer.out_shape, layer.params, biases, layer.macs, elements, elements,
                                     out.field, out.depth, out.depth - state.depth, saved, input_grad + weight_grad)
        return out

    def saved_storage(self, item: Saved, layer: Layer, biases: int, read: _Storage, out: _Storage, compute: str,
                      inplace: bool, rule: str | None) -> _Storage | None:
        """The storage a `Saved` item of `layer` names (NOTE: [Saved for backward]); None for a parameter."""
        if item.tensor == "input":
            return _Storage(math.prod(layer.in_shape), 0, read.dtype) if inplace else read
        if item.tensor == "output":
            return out
        if item.tensor == "weight":  # a parameter, unless autocast casts it to a copy
            weights = layer.params - biases
            return _Storage(0, weights, compute) if rule == "low" and weights else None
        if item.tensor == "new":
            dtype = item.dtype
            if dtype == "mask":  # dropout's: a bool tensor on CUDA (native_dropout), the input's dtype on the CPU
                dtype = "bool" if self.precision.device == "cuda" else compute
            return _Storage(item.elements, item.fixed, compute if dtype == "compute" else dtype)
        raise ValueError(f"op '{layer.op}' saves {item.tensor!r}: expected input, output, weight or new")

    def module(self, module: Module, state: _State) -> _State:
        out = self.module_body(module, state)
        self.record(module, state, out)
        return out

    def record(self, module: Module, state: _State, out: _State) -> None:
        inside = list(self._contents(module.body))
        self.costs[id(module)] = Cost(
            module.out_shape, module.params, sum(self.costs[id(c)].biases for c in module.children()),
            module.macs, math.prod(module.out_shape), sum(c.activations for c in inside), out.field, out.depth,
            out.depth - state.depth, Memory.total(c.saved for c in inside), sum(c.backward_macs for c in inside))

    def merge(self, merge: Merge, start: _State, ends: list[_State]) -> _State:
        """A merge's output: the union of its arms (its input, for a passthrough); its numbers: its
        own, the output (none for a passthrough, whose output is its input) and what it saves —
        its arms' contents are theirs."""
        combinator = COMBINATORS[merge.kind]
        saved = Memory.total(self.keep(ends[index].storage) for index in combinator.saved_arms(len(ends)))
        elements = math.prod(merge.out_shape)
        if combinator.passthrough:
            out, own = start, 0
        else:
            dtype = "float32" if any(end.storage.dtype == "float32" for end in ends) else ends[0].storage.dtype
            out = _State(Field.union([end.field for end in ends]), max(end.depth for end in ends),
                         _Storage(elements, 0, dtype), any(end.grad for end in ends))
            own = elements
        self.costs[id(merge)] = Cost(merge.out_shape, 0, 0, 0, elements, own, out.field, out.depth,
                                     out.depth - start.depth, saved)
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

    def _contents(self, nodes: list[Node]):
        """The costs of `nodes` and, through merges, of their arms' nodes (a module's cost covers its body)."""
        for node in nodes:
            yield self.costs[id(node)]
            for arm in nested(node):
                yield from self._contents(arm)


# NOTE: [Training memo]
# What a module does to a training step -- the bytes its ops save, its backward MACs, its
# parameter tensors and buffers, the storage and gradient flag of its output -- depends on the
# module and on its input: the input's dtype, whether it needs a gradient, and whether an op
# before it saved it already (its bytes then count once, NOTE [Saved for backward]). Its
# in-place plan is its own (netdsl/inplace.py starts each module afresh). So the copies of one
# remembered block instance (`Module.template`, NOTE [Elaboration memo]) entered in the same
# state do the same thing: `training` walks the first and applies its effect to the others.
# A sweep's variants share the elaboration memo, hence this one: a depth step walks only what
# is new. tests/test_cost.py checks every shipped network: the numbers `analyse` gives.


@dataclass(frozen=True)
class _Effect:
    saved: Memory
    backward: int
    tensors: int
    buffers: int
    keeps_input: bool  # an op inside saves the module's input storage
    output: "_Storage | None"  # a storage made inside (its size and dtype), None: the input's own
    output_kept: bool
    grad: bool
    depth: int


class _TrainingWalk(_Walk):
    """`_Walk` adding up a training step's numbers as it goes, and skipping remembered modules."""

    def __init__(self, network: Network, precision: Precision, memo: dict):
        super().__init__(network, None, precision)
        self.memo = memo
        self.saved, self.backward, self.tensors, self.buffers = NO_MEMORY, 0, 0, 0

    def keep(self, storage: _Storage | None) -> Memory:
        memory = super().keep(storage)
        self.saved += memory
        return memory

    def layer(self, layer: Layer, state: _State) -> _State:
        out = super().layer(layer, state)
        self.backward += self.costs[id(layer)].backward_macs
        if not layer.shared:  # (as `network.layers()` counts them)
            tensors, buffers = _state_of(layer)
            self.tensors += tensors
            self.buffers += buffers
        return out

    def module(self, module: Module, state: _State) -> _State:
        if module.template is None:
            return self.module_body(module, state)
        source = state.storage
        saved_before = id(source) in self.kept
        key = (module.template, self.precision, source.dtype, state.grad, saved_before)
        effect = self.memo.get(key)
        if effect is None:
            before = self.saved, self.backward, self.tensors, self.buffers
            out = self.module_body(module, state)
            made = out.storage is not source
            self.memo[key] = _Effect(
                self.saved - before[0], self.backward - before[1], self.tensors - before[2], self.buffers - before[3],
                keeps_input=not saved_before and id(source) in self.kept,
                output=_Storage(out.storage.elements, out.storage.fixed, out.storage.dtype) if made else None,
                output_kept=made and id(out.storage) in self.kept, grad=out.grad, depth=out.depth - state.depth)
            return out
        self.saved += effect.saved
        self.backward += effect.backward
        self.tensors += effect.tensors
        self.buffers += effect.buffers
        if effect.keeps_input:
            self.kept[id(source)] = source
        storage = source
        if effect.output is not None:
            storage = _Storage(effect.output.elements, effect.output.fixed, effect.output.dtype)
            if effect.output_kept:
                self.kept[id(storage)] = storage
        return _State(None, state.depth + effect.depth, storage, effect.grad)
