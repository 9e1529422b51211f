"""Stage 4 — emit: `graph.Network` → PyTorch source, `nn.Module`, TorchScript / export / ONNX files.

`python_source` writes the module classes a careful engineer would write by hand: one class per
distinct block structure (torchvision style, `__init__` with literal sizes, straight-line
`forward`), `nn.Sequential` for groups and repetitions, attribute names taken from the labels so
`state_dict` keys are the author's. `build` executes that source (only identifiers validated by
the checker and numbers reach it) and instantiates the network; `save_torchscript`,
`save_export` and `save_onnx` save it atomically. The checker's shapes are trusted, never recomputed.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import linecache
import os
from pathlib import Path

from .combinators import COMBINATORS
from .fileio import write_atomically  # also importable from here, where it lived before netdsl.fileio
from .graph import Layer, Merge, Module, Network, Node, Tap, From
from .layers import REGISTRY, rule_shape
from .names import Namespace, attribute, class_name, is_attribute, string
from .text import shape_text
from .walk import Interpreter

INDENT = "    "
# Names the emitted source defines or imports at module level, besides the helper classes.
RESERVED_CLASS_NAMES = ("OrderedDict", "List", "Tuple", "Union", "torch", "Tensor", "nn", "F", "ROOT")


def _literal(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, str) and value.isidentifier():
        return repr(value)
    raise ValueError(f"cannot emit {value!r}")  # the checker admits nothing else


# ---- in-place planning -------------------------------------------------------------------
# NOTE: [In-place activations]
# torchvision runs ReLU in place. That is safe only when nothing else reads the activation's
# input afterwards (a residual's identity, a sibling inception branch, the caller's tensor) and
# the op that produced it does not need its own output for backward. `_plan` walks the graph
# once with that "owned" fact and records, per module attribute, whether every use is safe.
# The same fact lets a residual add in place (`out += identity`, as torchvision writes it) when
# the body's result is a fresh tensor that no backward reads: one allocation less per block.

class _InplacePlan(Interpreter):
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


# ---- source generation ---------------------------------------------------------------------

class _SourceWriter:
    def __init__(self, network: Network, functional: bool = True):
        self.network = network
        self.functional = functional
        self.uses_functional = False  # some forward calls F.<op>
        self.plan = _InplacePlan(network)
        self.classes: dict[str, str] = {}  # class body (with a placeholder name) -> class name
        self.blocks: list[str] = []
        self.class_names = Namespace(RESERVED_CLASS_NAMES + tuple(
            _helper_class(layer.helper_source) for layer in REGISTRY.values() if layer.helper_source))
        self.uses_ordered_dict = False
        self.helpers: dict[str, str] = {}  # helper class name -> its source, in order of first use
        self.imports: set[str] = set()  # the modules of user-defined ops' classes

    def source(self) -> str:
        root = self.module_class(self.network.root)
        clashes = {module.split(".")[0] for module in self.imports} & set(self.classes.values())
        if clashes:  # a class named like a plugin's package would hide it
            raise ValueError(f"a generated class is named like the package {sorted(clashes)[0]!r} of an op")
        source_name = ascii(Path(self.network.file).name)[1:-1]  # a file name must not break the comment
        header = [
            f"# Generated by netdsl from {source_name} (network {self.network.name}).",
            f"# Input {list(self.network.input_shape)} per sample; {self.network.params:,} parameters.",
            "# Usage: model = ROOT(); model.load_state_dict(...)",
        ]
        imports = ["from collections import OrderedDict"] if self.uses_ordered_dict else []
        if self.network.aux_heads:
            imports.append("from typing import List, Tuple, Union")
        imports += [""] if imports else []
        imports += ["import torch", "from torch import Tensor, nn"]
        imports += ["import torch.nn.functional as F"] if self.uses_functional else []
        imports += [f"import {module}" for module in sorted(self.imports)]
        body = "\n\n\n".join([*self.helpers.values(), *self.blocks])
        return "\n".join(header + [""] + imports) + "\n\n\n" + body + f"\n\n\nROOT = {root}\n"

    # constructor expressions
    def layer_expr(self, module: Module, layer: Layer) -> str:
        op = REGISTRY[layer.op]
        emission = _emission(layer)
        if op.parameter:  # a learned tensor of the module itself: (shape, initial value, how it is applied)
            shape, init = emission.args[:2]
            return f"nn.Parameter(torch.full({_literal(tuple(shape))}, {_literal(float(init))}))"
        args = _arguments(emission, self.plan(module, layer))
        if emission.helper:
            self.helpers.setdefault(emission.cls, REGISTRY[layer.op].helper_source)
            return f"{emission.cls}({args})"
        if emission.module is not None:  # a user-defined op's own class
            if not (all(part.isidentifier() for part in emission.module.split(".")) and emission.cls.isidentifier()):
                raise ValueError(f"op '{layer.op}' emits {emission.module!r}.{emission.cls!r}, not an importable name")
            self.imports.add(emission.module)
            return f"{emission.module}.{emission.cls}({args})"
        return f"nn.{emission.cls}({args})"

    def calls(self, module: Module, layer: Layer) -> bool:
        """`layer` is a function call in `module`'s forward (see `Module.calls`)."""
        if not (self.functional and module.calls(layer)):
            return False
        self.uses_functional |= REGISTRY[layer.op].functional.startswith("F.")
        return True

    def child_expr(self, parent: Module, child, depth: int) -> str:
        if child.walk_kind == "layer":
            return self.layer_expr(parent, child)
        # nn.Sequential only computes a chain; a body with a residual, concat, gate or aux head needs
        # a class of its own whatever its kind.
        if child.as_sequential:
            return self.sequential_expr(child, depth)
        return f"{self.module_class(child)}()"

    def sequential_expr(self, module: Module, depth: int) -> str:
        children = list(module.children())
        pad = INDENT * (depth + 1)
        if all(c.name == str(i) for i, c in enumerate(children)):
            exprs = [self.child_expr(module, c, depth + 1) for c in children]
            items = []
            index = 0
            while index < len(exprs):  # runs of identical children: *[X() for _ in range(n)]
                run = 1
                while index + run < len(exprs) and exprs[index + run] == exprs[index]:
                    run += 1
                if run >= 3:
                    items.append(f"*[{exprs[index]} for _ in range({run})]")
                else:
                    items.extend(exprs[index:index + run])
                index += run
        else:
            self.uses_ordered_dict = True
            items = [f"({string(c.name)}, {self.child_expr(module, c, depth + 2)})" for c in children]
            items = ["OrderedDict([", *[f"{INDENT}{item}," for item in items], "])"]
            return "nn.Sequential(\n" + "\n".join(pad + line for line in items) + "\n" + INDENT * depth + ")"
        if not items:
            return "nn.Sequential()"
        return "nn.Sequential(\n" + "".join(f"{pad}{item},\n" for item in items) + INDENT * depth + ")"

    # classes
    def module_class(self, module: Module) -> str:
        init = [f"{INDENT}def __init__(self) -> None:", f"{INDENT * 2}super().__init__()"]
        for child in module.children():
            if child.walk_kind == "layer" and self.calls(module, child):
                continue  # written into forward
            expr = self.child_expr(module, child, depth=2)
            if is_attribute(child.name):
                init.append(f"{INDENT * 2}self.{child.name} = {expr}")
            elif _is_parameter(child):
                init.append(f"{INDENT * 2}self.register_parameter({string(child.name)}, {expr})")
            else:
                init.append(f"{INDENT * 2}self.add_module({string(child.name)}, {expr})")
        forward = _Forward(self, module).function()
        body = "\n".join(init) + "\n\n" + "\n".join(forward)
        name = self.classes.get(body)
        if name is None:
            name = self.class_names.fresh(class_name(module.type_name))
            self.classes[body] = name
            doc = f'{INDENT}"""{module.type_name}: {shape_text(module.in_shape)} -> {shape_text(module.out_shape)}."""'
            self.blocks.append(f"class {name}(nn.Module):\n{doc}\n\n{body}")
        return name


def _arguments(emission, inplace: bool = False) -> str:
    """An emission's arguments as Python source: its positional ones, then its keywords."""
    kwargs = {**emission.kwargs, **({"inplace": True} if inplace else {})}
    return ", ".join([_literal(a) for a in emission.args] + [f"{k}={_literal(v)}" for k, v in kwargs.items()])


def _emission(layer: Layer):
    """The layer's torch emission, from the shape its op's rules see (NOTE [Axes] in layers.py)."""
    op = REGISTRY[layer.op]
    return op.torch(rule_shape(op, layer.in_shape, layer.axes), layer.args)


def _is_parameter(node) -> bool:
    return node.walk_kind == "layer" and REGISTRY[node.op].parameter


def _helper_class(source: str) -> str:
    """The name of the class a helper's source defines (`class StochasticDepth(nn.Module):`)."""
    return source.split("class ", 1)[1].split("(", 1)[0]


class _Forward(Interpreter):
    """Straight-line `forward` for one module class: the walk's value is the variable holding the
    current tensor; a child module is a call (its own class has its own forward). A merge is
    written by its combinator's `emit` (`netdsl/combinators.py`) through `fresh`, `line`, `chain`,
    `attribute` and `owned`."""

    def __init__(self, writer: _SourceWriter, module: Module):
        super().__init__()
        self.writer, self.plan, self.module_ = writer, writer.plan, module
        self.lines: list[str] = []
        # a local never shadows a name the generated code uses: its own, torch's, or a builtin (getattr)
        self.names = Namespace({"x", "self", "torch", "nn", "F", "Tensor", "aux", "List", "Tuple", "Union",
                                "OrderedDict", *dir(builtins)})
        self.target = "x"  # the variable the chain being written assigns to

    # the writer's interface for combinators
    def fresh(self, base: str) -> str:
        return self.names.fresh(base)

    def line(self, text: str) -> None:
        self.lines.append(f"{INDENT * 2}{text}")

    def chain(self, nodes: list[Node], source: str, target: str | None = None) -> str:
        """Applies `nodes` to `source`, writing into `target`; returns the variable holding the result."""
        if target is None:
            return super().chain(nodes, source)
        outer, self.target = self.target, target
        try:
            return super().chain(nodes, source)
        finally:
            self.target = outer

    attribute = staticmethod(attribute)

    def owned(self, merge: Merge, arm: int) -> bool:
        return self.plan.owned(merge, arm)

    # the function
    def function(self) -> list[str]:
        module = self.module_
        arguments = "x: Tensor"
        for wire in module.parameters:  # tensors passed in besides x
            self.wires[wire.key] = self.fresh(wire.name)
            arguments += f", {self.wires[wire.key]}: Tensor"
        heads = any(node.walk_kind == "merge" and COMBINATORS[node.kind].training_output for node in module.body)
        if not heads:
            result = self.chain(module.body, "x", "x")
            return [f"{INDENT}def forward(self, {arguments}) -> Tensor:", *self.lines,
                    f"{INDENT * 2}return {result}"]
        # NOTE: [Auxiliary heads] as torchvision: (output, [aux outputs]) in training, output in eval.
        self.line("aux: List[Tensor] = []")
        result = self.chain(module.body, "x", "x")
        signature = f"{INDENT}def forward(self, {arguments}) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:"
        return [signature, *self.lines, f"{INDENT * 2}if self.training:", f"{INDENT * 3}return {result}, aux",
                f"{INDENT * 2}return {result}"]

    # the walker's hooks
    def call(self, node: Layer | Module, source: str) -> str:
        extra = "".join(f", {self.wires[wire.key]}" for wire in getattr(node, "inputs", ()))
        self.line(f"{self.target} = {attribute(node.name)}({source}{extra})")
        return self.target

    def layer(self, layer: Layer, source: str) -> str:
        if _is_parameter(layer):
            operator = {"mul": "*", "add": "+"}[layer.args["op"]]
            self.line(f"{self.target} = {attribute(layer.name)} {operator} {source}")  # as torchvision: layer_scale * x
            return self.target
        if not self.writer.calls(self.module_, layer):
            return self.call(layer, source)
        arguments = _arguments(_emission(layer), self.plan(self.module_, layer))
        self.line(f"{self.target} = {REGISTRY[layer.op].functional}({source}{', ' if arguments else ''}{arguments})")
        return self.target

    def module(self, module: Module, source: str) -> str:
        return self.call(module, source)

    def merge(self, merge: Merge, source: str, arms: list) -> str:
        out = COMBINATORS[merge.kind].emit(self, merge, source)
        if out != source:  # the chain goes on in the merge's result
            self.target = out
        return out

    def arm(self, merge: Merge, index: int, nodes: list[Node], source: str) -> str:
        return source  # arms are written by the combinator's `emit`, which names their variables

    def from_(self, node: From, source: str, wire: str) -> str:
        if node.channels is None:
            return wire
        name = self.fresh(node.wire.name)
        self.line(f"{name} = {wire}[:, {node.channels[0]}:{node.channels[1]}]")
        return name

    def tap(self, tap: Tap, source: str) -> str:
        name = self.fresh(tap.wire.name)
        self.line(f"{name} = {source}")
        return name


def python_source(network: Network, functional: bool = True) -> str:
    """The standalone PyTorch source of `network`; `ROOT` names the network's class. Unlabelled
    parameter-free layers are function calls in `forward` (`functional=False`: child modules too,
    numbered by position, for forward hooks on every layer)."""
    return _SourceWriter(network, functional).source()


def build(network: Network, source: str | None = None):
    """Instantiate the network as an `nn.Module` (random initialization, training mode)."""
    source = source or python_source(network)
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<netdsl:{network.name}:{digest}>"
    # TorchScript reads class source through linecache; register it before anyone asks.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {"__name__": f"netdsl_generated_{digest}"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[namespace["ROOT"].__name__]()


@contextlib.contextmanager
def _jit_quietly():
    """torch.jit is deprecated in favour of torch.export but still supported: silence the warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def script(module):
    import torch

    with _jit_quietly():
        return torch.jit.script(module)


def save_torchscript(module, path: str | os.PathLike, freeze: bool = False) -> None:
    """Script `module` and save it to `path` atomically (a temporary file renamed into place);
    with `freeze`, an eval-mode frozen graph (`netdsl.optimize.freeze`)."""
    import torch

    scripted = script(module)
    if freeze:
        from .optimize import freeze as freeze_scripted

        with _jit_quietly():
            scripted = freeze_scripted(scripted)

    def save(tmp: str) -> None:
        with _jit_quietly():
            torch.jit.save(scripted, tmp)

    write_atomically(path, save)


def save_export(module, path: str | os.PathLike, input_shape: tuple, dtype=None, device=None) -> None:
    """Save a `torch.export` program (eval mode, any batch size) to `path` atomically; load it with
    `torch.export.load(path).module()`."""
    import torch

    module.eval()
    example, dynamic_shapes = _dynamic_batch(input_shape, dtype, device)
    program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes)
    write_atomically(path, lambda tmp: torch.export.save(program, tmp))


def save_aoti(module, path: str | os.PathLike, input_shape: tuple, dtype=None, device=None) -> None:
    """Compile `module` (eval mode, any batch size) ahead of time with AOTInductor into a `.pt2`
    package, atomically; load it with `torch._inductor.aoti_load_package(path)` (needs the same
    torch, no Python source). The C++ compile takes a while: inductor generates and builds kernels."""
    import torch

    module.eval()
    example, dynamic_shapes = _dynamic_batch(input_shape, dtype, device)
    program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes)
    write_atomically(path, lambda tmp: torch._inductor.aoti_compile_and_package(program, package_path=tmp))


def save_onnx(module, path: str | os.PathLike, input_shape: tuple, dtype=None) -> None:
    """Save `module` (eval mode) as one self-contained ONNX file with a dynamic batch dimension,
    atomically; its input is named "input" and its output "output"."""
    import torch

    module.eval()
    example, dynamic_shapes = _dynamic_batch(input_shape, dtype)
    # NOTE: [ONNX exporter] torch.export-based (dynamo=True): it exported every network in
    # networks/ with outputs equal to eager's; weights go inside the file (external_data=False),
    # which ONNX allows up to 2 GB (api.compile refuses larger models).
    program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes=dynamic_shapes,
                                input_names=["input"], output_names=["output"], verbose=False)
    write_atomically(path, lambda tmp: program.save(tmp, external_data=False))


def _dynamic_batch(input_shape: tuple, dtype=None, device=None) -> tuple[tuple, dict]:
    """An example input (batch 2) and `dynamic_shapes` that leave the batch size free."""
    import torch

    example = torch.randn(2, *input_shape, dtype=dtype, device=device)
    return (example,), {"x": {0: torch.export.Dim("batch", min=1, max=65536)}}


def save_python(network: Network, path: str | os.PathLike) -> None:
    """Write the standalone PyTorch source of `network` to `path` atomically."""
    source = python_source(network)
    write_atomically(path, lambda tmp: Path(tmp).write_text(source, encoding="utf-8"))


# format -> default file suffix
FORMATS = {"torchscript": ".pt", "export": ".pt2", "onnx": ".onnx", "python": ".py", "aoti": ".pt2"}
