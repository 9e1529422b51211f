"""Node facts: a checked network and its costs → what is said about each node when pointed at.

The language server's hover and the live viewer (`netdsl serve`) describe a node by the same
facts — its kind, source location, shapes, parameters, MACs and output memory — and get them from
here, through one walk of the graph (`instances`), so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .combinators import COMBINATORS
from .cost import Costs, byte_size
from .errors import Span
from .graph import Network, Node, Shape, walk
from .text import human, shape_text

_KINDS = {
    "layer": lambda node: node.op,
    "module": lambda node: node.type_name if node.kind == "block" else node.kind,
    "merge": lambda node: COMBINATORS[node.kind].label,
    "tap": lambda node: "tap",
    "from_": lambda node: "from",
}


def kind(node: Node) -> str:
    """The op of a layer, the block of a module, the combinator of a merge, or the marker."""
    return _KINDS[node.walk_kind](node)


@dataclass(frozen=True)
class Facts:
    """One node of one network, as a hover shows it."""

    network: str
    path: str  # dotted module path ("layer3.17.conv2"; a merge or marker: its module's path)
    node: Node
    kind: str
    span: Span
    in_shape: Shape
    out_shape: Shape
    params: int
    macs: int
    elements: int  # the output tensor's elements (memory, one sample)

    @property
    def counted(self) -> bool:
        """Layers and modules have parameters and MACs of their own; merges and markers do not."""
        return self.node.walk_kind in ("layer", "module")

    def counts_text(self) -> str:
        """`[3, 224, 224] -> [64, 112, 112]  9,408 params  118.01 M MACs  802,816 elements`."""
        shapes = f"{shape_text(self.in_shape)} -> {shape_text(self.out_shape)}"
        if not self.counted:
            return shapes
        return f"{shapes}  {self.params:,} params  {human(self.macs)} MACs  {self.elements:,} elements"

    def to_json(self, dtype: str = "float32") -> dict:
        return {
            "network": self.network, "path": self.path, "name": getattr(self.node, "name", ""),
            "kind": self.kind, "walk_kind": self.node.walk_kind,
            "location": {"file": self.span.file, "line": self.span.line, "column": self.span.column},
            "input": list(self.in_shape), "output": list(self.out_shape),
            "params": self.params if self.counted else None, "macs": self.macs if self.counted else None,
            "memory": {"elements": self.elements, "bytes": byte_size(self.elements, dtype)},
        }


def instances(network: Network, costs: Costs) -> Iterator[Facts]:
    """The root and every node below it with its module path, in definition order. Unlike
    `Module.children` this also visits merges, the named-tensor markers and the later uses of a
    shared layer, which a hover should describe too."""
    nodes = [(network.name, network.root)] + [(path or network.name, node) for path, node, _ in walk(network.root)]
    for path, node in nodes:
        cost = costs[node]
        yield Facts(network.name, path, node, kind(node), node.span, node.in_shape, node.out_shape,
                    cost.params, cost.macs, cost.elements)
