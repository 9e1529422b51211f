"""In-place planning: checked `graph.Network` → which layers and residual sums may run in place.

The emitter writes `inplace=True` and `out += identity` from this plan, and the training-memory
walk (`netdsl/cost.py`) reads it to know which tensors share storage. A pure pass; never imports torch.
"""

from __future__ import annotations

from .combinators import COMBINATORS
from .graph import From, Layer, Merge, Module, Network, Node, Tap
from .layers import REGISTRY
from .walk import Interpreter


# NOTE: [In-place activations]
# torchvision runs ReLU in place. That is safe only when nothing else reads the activation's
# input afterwards (a residual's identity, a sibling inception branch, the caller's tensor) and
# the op that produced it does not need its own output for backward. `_plan` walks the graph
# once with that "owned" fact and records, per module attribute, whether every use is safe.
# The same fact lets a residual add in place (`out += identity`, as torchvision writes it) when
# the body's result is a fresh tensor that no backward reads: one allocation less per block.

class InplacePlan(Interpreter):
    """The walk's value is whether the current tensor is *owned*: fresh, and read by nobody else."""

    def __init__(self, network: Network):
        super().__init__()
        self.safe: dict[tuple[int, str], bool] = {}
        self.owned_arms: dict[int, list[bool]] = {}  # id(merge) -> whether each arm's result is owned
        self.run(network, False)

    def __call__(self, module: Module, layer: Layer) -> bool:
        return self.safe.get((id(module), layer.name), False)

    def owned(self, merge: Merge, arm: int) -> bool:
        return self.owned_arms[id(merge)][arm]

    def layer(self, layer: Layer, owned: bool) -> bool:
        op = REGISTRY[layer.op]
        if op.inplace:
            key = (id(self.modules[-1]), layer.name)
            self.safe[key] = self.safe.get(key, True) and owned
            return False  # its backward reads its output
        return owned if op.aliases_input else op.output_mutable

    def module(self, module: Module, owned: bool) -> bool:
        return self.module_body(module, False)  # the caller's tensor is not the module's to overwrite

    def arm(self, merge: Merge, index: int, nodes: list[Node], owned: bool) -> bool:
        return self.chain(nodes, False)  # every arm reads the merge's input: nobody owns it

    def merge(self, merge: Merge, owned: bool, arms: list[bool]) -> bool:
        self.owned_arms[id(merge)] = arms
        return COMBINATORS[merge.kind].fresh_output

    def tap(self, tap: Tap, owned: bool) -> bool:
        return False  # a named tensor may be read again later

    def from_(self, node: From, owned: bool, wire) -> bool:
        return False
