"""The annotated graph: what the checker returns and every later stage reads.

A `Network` holds a tree of `Module`s (block instances, groups, repetitions). A module's
`body` is its dataflow, in order: `Layer`s and child `Module`s applied one after another, and
the combinators `Residual` and `Concat`, which nest dataflow without adding a module (their
layers still belong to the enclosing module's namespace). Every node carries its input and
output shape, parameter count and multiply-accumulates; nothing changes them after `check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

from .errors import Frame, Span

Shape = tuple[int, ...]  # per-sample shape, batch dimension implicit: (C, H, W) or (features,)


@dataclass(eq=False)
class Wire:
    """A named tensor inside one module's forward: made by `tap`, or a block's tensor argument."""

    name: str
    shape: Shape
    key: int  # unique per network: a later `tap` of the same name is a new wire


@dataclass
class Layer:
    name: str  # attribute name inside the enclosing module ("conv1", or "2" when unlabelled)
    op: str  # registry name
    args: dict  # every argument, defaults filled in
    in_shape: Shape
    out_shape: Shape
    params: int
    macs: int
    span: Span
    trace: tuple[Frame, ...] = ()
    shared: bool = False  # a later use of a parameter-free module already named in this scope


@dataclass
class Module:
    name: str
    kind: str  # "network" | "block" | "sequential"
    type_name: str  # block or network name; "Sequential" for groups and repetitions
    body: list["Node"]
    in_shape: Shape
    out_shape: Shape
    span: Span
    params: int = 0
    macs: int = 0
    trace: tuple[Frame, ...] = ()
    inputs: tuple[Wire, ...] = ()  # extra tensor arguments, as wires of the calling module
    parameters: tuple[Wire, ...] = ()  # the same tensors as wires inside this module

    def children(self) -> Iterator[Union[Layer, "Module"]]:
        """Named children in definition order (looking through combinators)."""
        yield from _named(self.body)

    @property
    def is_sequence(self) -> bool:
        """True when the body is a plain chain of single-input children (no combinator, no wire)."""
        return not self.parameters and all(
            isinstance(node, Layer) or (isinstance(node, Module) and not node.inputs) for node in self.body)


@dataclass
class Residual:
    body: list["Node"]
    shortcut: Union[Layer, Module, None]  # None: identity
    in_shape: Shape
    out_shape: Shape
    span: Span


@dataclass
class Concat:
    branches: list[list["Node"]]  # each branch: a chain applied to the same input
    in_shape: Shape
    out_shape: Shape
    span: Span


@dataclass
class Gate:
    """The input multiplied by `body(input)`, broadcast over space (squeeze-and-excitation)."""

    body: list["Node"]
    in_shape: Shape
    out_shape: Shape
    span: Span


@dataclass
class Aux:
    """An auxiliary head reading the current tensor; returned as an extra output in training."""

    head: Module
    in_shape: Shape
    out_shape: Shape  # the main path's shape: unchanged
    span: Span


@dataclass
class Sum:
    """Branches applied to the same input (or to named tensors), summed element-wise."""

    branches: list[list["Node"]]
    in_shape: Shape
    out_shape: Shape
    span: Span


@dataclass
class Tap:
    """Names the current tensor (`tap name`)."""

    wire: Wire
    in_shape: Shape
    out_shape: Shape
    span: Span


@dataclass
class From:
    """Continues from a named tensor (`from name`)."""

    wire: Wire
    in_shape: Shape
    out_shape: Shape
    span: Span


Node = Union[Layer, Module, Residual, Concat, Gate, Aux, Sum, Tap, From]


@dataclass
class Network:
    name: str
    file: str
    arguments: dict  # the network's parameters after defaults and overrides
    input_shape: Shape
    root: Module
    output_shape: Shape = field(init=False)
    input_names: tuple[str | None, ...] = ()  # the symbolic sizes of `input [3, H, W]` (None: a number)
    reads_input_size: Span | None = None  # first `in.height`-like read: the structure may vary with the size

    def __post_init__(self) -> None:
        self.output_shape = self.root.out_shape

    @property
    def params(self) -> int:
        return self.root.params

    @property
    def macs(self) -> int:
        return self.root.macs

    @property
    def aux_heads(self) -> list[Aux]:
        return [node for node in self.root.body if isinstance(node, Aux)]

    def layers(self) -> Iterator[tuple[str, Layer]]:
        """Every layer with its dotted module path, in definition order."""
        yield from _walk_layers(self.root, "")


def nested(node: Node) -> list[list[Node]]:
    """The chains a combinator holds, in definition order: a residual's body, then its shortcut as
    a one-node chain; the branches of a concat or sum; a gate's body; an aux head. Layers, modules
    and the named-tensor markers hold none (a module's own body is `module.body`)."""
    if isinstance(node, Residual):
        return [node.body] + ([[node.shortcut]] if node.shortcut is not None else [])
    if isinstance(node, (Concat, Sum)):
        return node.branches
    if isinstance(node, Gate):
        return [node.body]
    if isinstance(node, Aux):
        return [[node.head]]
    return []


def _named(nodes: list[Node]) -> Iterator[Union[Layer, Module]]:
    for node in nodes:
        if isinstance(node, Layer) and node.shared:
            continue
        if isinstance(node, (Layer, Module)):
            yield node
        elif isinstance(node, Residual):
            yield from _named(node.body)
            if node.shortcut is not None:
                yield node.shortcut
        elif isinstance(node, (Concat, Sum)):
            for branch in node.branches:
                yield from _named(branch)
        elif isinstance(node, Gate):
            yield from _named(node.body)
        elif isinstance(node, Aux):
            yield node.head


def _walk_layers(module: Module, prefix: str) -> Iterator[tuple[str, Layer]]:
    for child in module.children():
        path = f"{prefix}{child.name}"
        if isinstance(child, Layer):
            yield path, child
        else:
            yield from _walk_layers(child, f"{path}.")
