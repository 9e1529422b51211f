"""The forward-dataflow interpreter over the checked graph, in the spirit of `torch.fx.Interpreter`.

`Interpreter.run(network, value)` pushes a value (a receptive field, the sizes of every input,
a variable name, an "owned" flag, ...) along the network's dataflow: through every layer and
module in order, into `tap`ped wires and out of `from`s, into a block's tensor arguments, and
through each merge's arms (each from the merge's input; an empty arm is the input itself) to
the merge. Passes subclass it and override only the hooks they compute: `layer`, `module`,
`merge`, `arm`, `tap`, `from_`. Nothing here knows one combinator from another.
"""

from __future__ import annotations

from typing import Any

from .graph import Layer, Merge, Module, Network, Node, Tap, From


class Interpreter:
    def __init__(self) -> None:
        self.wires: dict[int, Any] = {}  # Wire.key -> the value that flowed into it
        self.modules: list[Module] = []  # the modules enclosing the node being visited, outermost first
        self.path: list[str] = []  # their names below the root

    @property
    def prefix(self) -> str:
        """The dotted path of the enclosing module with a trailing dot ("" at the root)."""
        return "".join(f"{name}." for name in self.path)

    def run(self, network: Network, value: Any) -> Any:
        self.modules.append(network.root)
        try:
            return self.chain(network.root.body, value)
        finally:
            self.modules.pop()

    # ---- the walk (not meant to be overridden) ------------------------------------------------
    def chain(self, nodes: list[Node], value: Any) -> Any:
        for node in nodes:
            value = self.node(node, value)
        return value

    def node(self, node: Node, value: Any) -> Any:
        return getattr(self, f"_visit_{node.walk_kind}")(node, value)

    def _visit_layer(self, node: Layer, value: Any) -> Any:
        return self.layer(node, value)

    def _visit_module(self, node: Module, value: Any) -> Any:
        for outer, inner in zip(node.inputs, node.parameters):  # tensors passed to a block
            if outer.key in self.wires:
                self.wires[inner.key] = self.wires[outer.key]
        return self.module(node, value)

    def _visit_merge(self, node: Merge, value: Any) -> Any:
        return self.merge(node, value, [self.arm(node, index, arm, value) for index, arm in enumerate(node.arms)])

    def _visit_tap(self, node: Tap, value: Any) -> Any:
        self.wires[node.wire.key] = self.tap(node, value)
        return value

    def _visit_from_(self, node: From, value: Any) -> Any:
        return self.from_(node, value, self.wires.get(node.wire.key))

    def module_body(self, module: Module, value: Any) -> Any:
        """Runs `module`'s body with it recorded as the enclosing module."""
        self.modules.append(module)
        self.path.append(module.name)
        try:
            return self.chain(module.body, value)
        finally:
            self.modules.pop()
            self.path.pop()

    # ---- hooks --------------------------------------------------------------------------------
    def layer(self, layer: Layer, value: Any) -> Any:
        return value

    def module(self, module: Module, value: Any) -> Any:
        return self.module_body(module, value)

    def arm(self, merge: Merge, index: int, nodes: list[Node], value: Any) -> Any:
        return self.chain(nodes, value)

    def merge(self, merge: Merge, value: Any, arms: list[Any]) -> Any:
        return value

    def tap(self, tap: Tap, value: Any) -> Any:
        """What the wire holds from now on."""
        return value

    def from_(self, node: From, value: Any, wire: Any) -> Any:
        return wire
