"""The annotated graph: what the checker returns and every later stage reads.

A `Network` holds a tree of `Module`s (block instances, groups, repetitions). A module's
`body` is its dataflow, in order: `Layer`s and child `Module`s applied one after another,
`Merge`s — a combinator (`netdsl/combinators.py`) whose arms are chains applied to the same
input and joined by the combinator's rule — and the named-tensor markers `Tap` and `From`.
A merge nests dataflow without adding a module (its layers belong to the enclosing module's
namespace). Every node carries its input and output shape; layers and modules their parameter
count and multiply-accumulates. Nothing changes them after `check`.

Each node class names its kind in `walk_kind`, which `netdsl/walk.py` dispatches on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

from .combinators import COMBINATORS
from .errors import Frame, Span
from .layers import REGISTRY

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
    labelled: bool = True  # the author named it (else `name` is its position among the module's children)
    axes: tuple[str, ...] | None = None  # the input's axes where not canonical (NOTE [Axes] in layers.py)
    out_axes: tuple[str, ...] | None = None  # the output's, likewise

    walk_kind = "layer"


@dataclass
class Module:
    name: str
    kind: str  # "network" | "block" | "sequential"
    type_name: str  # block or network name; "group", "repeat" or "projection" (a residual's generated one)
    body: list["Node"]
    in_shape: Shape
    out_shape: Shape
    span: Span
    params: int = 0
    macs: int = 0
    trace: tuple[Frame, ...] = ()
    inputs: tuple[Wire, ...] = ()  # extra tensor arguments, as wires of the calling module
    parameters: tuple[Wire, ...] = ()  # the same tensors as wires inside this module
    # the same object for every copy of one remembered block instance (NOTE [Elaboration memo]),
    # None for a module built on its own: what a pass may remember per module (cost.training)
    template: object = field(default=None, repr=False, compare=False)

    walk_kind = "module"

    def children(self) -> Iterator[Union[Layer, "Module"]]:
        """Named children in definition order (looking through merges)."""
        yield from _named(self.body)

    @property
    def as_sequential(self) -> bool:
        """Emitted as an `nn.Sequential`: a plain chain that is a group or repetition, or whose
        children are all unlabelled. (Any other module, and the network, is a class of its own.)"""
        return self.kind != "network" and self.is_sequence and not any(  # it holds modules only: no `param`
            c.walk_kind == "layer" and REGISTRY[c.op].parameter for c in self.children()) and (
            self.kind == "sequential" or all(c.name == str(i) for i, c in enumerate(self.children())))

    def calls(self, layer: Layer) -> bool:
        """Whether `layer`, a child of this module, is a function call in `forward` rather than a
        child module, as torchvision writes them (`torch.flatten(x, 1)`, `F.relu(x)`): unlabelled,
        its op has a functional form (no parameters, no buffers), in a module with a `forward`."""
        return not layer.labelled and REGISTRY[layer.op].functional is not None and not self.as_sequential

    @property
    def is_sequence(self) -> bool:
        """True when the body is a plain chain of single-input children (no combinator, no wire)."""
        return not self.parameters and all(
            node.walk_kind == "layer" or (node.walk_kind == "module" and not node.inputs) for node in self.body)


@dataclass
class Merge:
    """A combinator: `arms` are chains applied to the merge's input (an empty arm is the input
    itself), joined by the rule of `COMBINATORS[kind]`. A residual's arms are its body and its
    shortcut; dense and gate have the input as their first arm; an auxiliary head's one arm is
    the head module, and its output is its input."""

    kind: str  # the combinator's keyword
    arms: list[list["Node"]]
    in_shape: Shape
    out_shape: Shape
    span: Span

    walk_kind = "merge"


@dataclass
class Tap:
    """Names the current tensor (`tap name`)."""

    wire: Wire
    in_shape: Shape
    out_shape: Shape
    span: Span

    walk_kind = "tap"


@dataclass
class From:
    """Continues from a named tensor (`from name`), or from its channels start..stop-1 (`from name[start:stop]`)."""

    wire: Wire
    in_shape: Shape
    out_shape: Shape
    span: Span
    channels: tuple[int, int] | None = None  # (start, stop) of a channel slice

    walk_kind = "from_"


Node = Union[Layer, Module, Merge, Tap, From]


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
        """Multiply-accumulates of one inference forward pass (auxiliary heads run in training only)."""
        return self.root.macs - self.aux_macs

    @property
    def aux_macs(self) -> int:
        """Multiply-accumulates of the auxiliary heads (a training step runs them too)."""
        return sum(head.macs for head in self.aux_heads)

    @property
    def aux_heads(self) -> list[Module]:
        """The auxiliary heads: the modules of the merges in the network's own body whose arm is an
        extra, training-time output."""
        return [arm[0] for node in self.root.body
                if node.walk_kind == "merge" and COMBINATORS[node.kind].training_output for arm in node.arms]

    def layers(self) -> Iterator[tuple[str, Layer]]:
        """Every layer with its dotted module path, in definition order."""
        for path, node, _ in walk(self.root):
            if node.walk_kind == "layer" and not node.shared:
                yield path, node


def describe(path: str, layer: Layer) -> str:
    """A layer as messages name it: its dotted path when the author labelled it, else what the
    author wrote, where, and in which module (`maxpool at vgg.net:29 in features`), not the
    position netdsl numbered it by."""
    if layer.labelled:
        return path
    parent = path.rpartition(".")[0]
    return f"{layer.op} at {Path(layer.span.file).name}:{layer.span.line}" + (f" in {parent}" if parent else "")


def nested(node: Node) -> list[list[Node]]:
    """The chains a node holds besides a module's own body: a merge's arms; nothing for others."""
    return node.arms if node.walk_kind == "merge" else []


def _named(nodes: list[Node]) -> Iterator[Union[Layer, Module]]:
    for node in nodes:
        if node.walk_kind == "merge":
            for arm in node.arms:
                yield from _named(arm)
        elif node.walk_kind == "module" or (node.walk_kind == "layer" and not node.shared):
            yield node


def walk(module: Module, prefix: str = "", depth: int = 1) -> Iterator[tuple[str, Node, int]]:
    """Every node below `module` in definition order, as `(path, node, depth)`: `path` is the
    dotted module path of a layer or module (for a merge or marker, that of the module it sits
    in), `depth` the number of modules enclosing it below `module` plus one (the root's
    children: 1). Merges are yielded before their arms; modules before their bodies."""
    stack: list[tuple[list[Node], int, str, int]] = [(module.body, 0, prefix, depth)]
    while stack:
        nodes, position, here, level = stack.pop()
        if position >= len(nodes):
            continue
        node = nodes[position]
        stack.append((nodes, position + 1, here, level))
        if node.walk_kind in ("layer", "module"):
            yield f"{here}{node.name}", node, level
            if node.walk_kind == "module":
                stack.append((node.body, 0, f"{here}{node.name}.", level + 1))
        else:
            yield here.rstrip("."), node, level
            for arm in reversed(nested(node)):
                stack.append((arm, 0, here, level))


def chains(module: Module, prefix: str = "") -> Iterator[tuple[str, list[Node]]]:
    """Every chain below `module` with the dotted path of the module whose namespace holds it:
    module bodies and merge arms, depth first."""
    stack: list[tuple[str, list[Node]]] = [(prefix.rstrip("."), module.body)]
    while stack:
        path, chain = stack.pop()
        yield path, chain
        here = f"{path}." if path else ""
        for node in reversed(chain):
            if node.walk_kind == "module":
                stack.append((f"{here}{node.name}", node.body))
            else:
                stack.extend((path, arm) for arm in reversed(nested(node)))
