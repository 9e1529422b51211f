"""Stage 4 — emit: `graph.Network` → PyTorch source, `nn.Module`, TorchScript / export / ONNX files.

`python_source` writes the module classes a careful engineer would write by hand: one class per
distinct block structure (torchvision style, `__init__` with literal sizes, straight-line
`forward`), `nn.Sequential` for groups and repetitions, attribute names taken from the labels so
`state_dict` keys are the author's. `build` executes that source (only identifiers validated by
the checker and numbers reach it) and instantiates the network; `save_torchscript`,
`save_export` and `save_onnx` save it atomically. The checker's shapes are trusted, never recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import keyword
import linecache
import os
from pathlib import Path

from .fileio import write_atomically  # also importable from here, where it lived before netdsl.fileio
from .graph import Aux, Concat, From, Gate, Layer, Module, Network, Node, Residual, Sum, Tap
from .layers import REGISTRY

INDENT = "    "

# Classes the emitted source defines itself for ops torch.nn lacks (`Emission.helper`), so that
# the generated file imports only torch.
HELPERS = {
    "StochasticDepth": '''class StochasticDepth(nn.Module):
    """In training, drops each sample ("row") or the whole batch ("batch") with probability p."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        return x * noise.div_(survival)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"''',
    "Mul": '''class Mul(nn.Module):
    """Multiplies by a constant factor."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"''',
    "PadIdentity": '''class PadIdentity(nn.Module):
    """Parameter-free shortcut: subsample by `stride`, then add `extra` zero channels (half before)."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra = extra
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.extra > 0:
            x = nn.functional.pad(x, [0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2])
        return x

    def extra_repr(self) -> str:
        return f"extra={self.extra}, stride={self.stride}"''',
}


def class_name(type_name: str) -> str:
    name = "".join(part[:1].upper() + part[1:] for part in type_name.split("_") if part) or "Block"
    if not name[0].isalpha():
        name = f"Net{name}"
    if name in {"Tensor", "OrderedDict", "Optional", "List"} or keyword.iskeyword(name):
        name += "_"
    return name


def _literal(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    if isinstance(value, str) and value.isidentifier():
        return repr(value)
    raise ValueError(f"cannot emit {value!r}")  # the checker admits nothing else


def _attribute(name: str) -> str:
    return f"self.{name}" if name.isidentifier() else f'getattr(self, "{int(name)}")'


# ---- in-place planning -------------------------------------------------------------------
# NOTE: [In-place activations]
# torchvision runs ReLU in place. That is safe only when nothing else reads the activation's
# input afterwards (a residual's identity, a sibling inception branch, the caller's tensor) and
# the op that produced it does not need its own output for backward. `_plan` walks the graph
# once with that "owned" fact and records, per module attribute, whether every use is safe.
# The same fact lets a residual add in place (`out += identity`, as torchvision writes it) when
# the body's result is a fresh tensor that no backward reads: one allocation less per block.

class _InplacePlan:
    def __init__(self, root: Module):
        self.safe: dict[tuple[int, str], bool] = {}
        self.add_in_place: set[int] = set()  # ids of the Residual nodes whose body result is owned
        self._module(root)

    def __call__(self, module: Module, layer: Layer) -> bool:
        return self.safe.get((id(module), layer.name), False)

    def _module(self, module: Module) -> bool:
        """Plans `module`; returns whether its output is owned by the caller."""
        return self._chain(module, module.body, owned=False)

    def _chain(self, module: Module, nodes: list[Node], owned: bool) -> bool:
        for node in nodes:
            if isinstance(node, Layer):
                op = REGISTRY[node.op]
                key = (id(module), node.name)
                if op.inplace:
                    self.safe[key] = self.safe.get(key, True) and owned
                    owned = False  # its backward reads its output
                elif not op.aliases_input:
                    owned = op.output_mutable
            elif isinstance(node, Module):
                owned = self._module(node)
            elif isinstance(node, Residual):
                if self._chain(module, node.body, owned=False):
                    self.add_in_place.add(id(node))
                if isinstance(node.shortcut, Layer):
                    self._chain(module, [node.shortcut], owned=False)
                elif node.shortcut is not None:
                    self._module(node.shortcut)
                owned = True  # a fresh sum
            elif isinstance(node, (Concat, Sum)):
                for branch in node.branches:
                    self._chain(module, branch, owned=False)
                owned = True  # a fresh concatenation or sum
            elif isinstance(node, (Tap, From)):
                owned = False  # a named tensor may be read again later
            elif isinstance(node, Gate):
                self._chain(module, node.body, owned=False)
                owned = False  # the product's backward reads both factors
            elif isinstance(node, Aux):
                self._module(node.head)
                owned = False  # the head's backward may read this tensor
        return owned


# ---- source generation ---------------------------------------------------------------------

class _SourceWriter:
    def __init__(self, network: Network):
        self.network = network
        self.plan = _InplacePlan(network.root)
        self.classes: dict[str, str] = {}  # class body (with a placeholder name) -> class name
        self.blocks: list[str] = []
        self.taken: set[str] = set(HELPERS)
        self.uses_ordered_dict = False
        self.helpers: list[str] = []

    def source(self) -> str:
        root = self.module_class(self.network.root)
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
        body = "\n\n\n".join([HELPERS[name] for name in self.helpers] + self.blocks)
        return "\n".join(header + [""] + imports) + "\n\n\n" + body + f"\n\n\nROOT = {root}\n"

    # constructor expressions
    def layer_expr(self, module: Module, layer: Layer) -> str:
        emission = REGISTRY[layer.op].torch(layer.in_shape, layer.args)
        args = [_literal(a) for a in emission.args]
        kwargs = dict(emission.kwargs)
        if self.plan(module, layer):
            kwargs["inplace"] = True
        args += [f"{k}={_literal(v)}" for k, v in kwargs.items()]
        if emission.helper:
            if emission.cls not in self.helpers:
                self.helpers.append(emission.cls)
            return f"{emission.cls}({', '.join(args)})"
        return f"nn.{emission.cls}({', '.join(args)})"

    def child_expr(self, parent: Module, child, depth: int) -> str:
        if isinstance(child, Layer):
            return self.layer_expr(parent, child)
        # nn.Sequential only computes a chain; a body with a residual, concat, gate or aux head needs
        # a class of its own whatever its kind.
        if child.is_sequence and (child.kind == "sequential" or _is_numbered_chain(child)):
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
            items = [f'("{c.name}", {self.child_expr(module, c, depth + 2)})' for c in children]
            items = ["OrderedDict([", *[f"{INDENT}{item}," for item in items], "])"]
            return "nn.Sequential(\n" + "\n".join(pad + line for line in items) + "\n" + INDENT * depth + ")"
        if not items:
            return "nn.Sequential()"
        return "nn.Sequential(\n" + "".join(f"{pad}{item},\n" for item in items) + INDENT * depth + ")"

    # classes
    def module_class(self, module: Module) -> str:
        init = [f"{INDENT}def __init__(self) -> None:", f"{INDENT * 2}super().__init__()"]
        for child in module.children():
            expr = self.child_expr(module, child, depth=2)
            if child.name.isidentifier():
                init.append(f"{INDENT * 2}self.{child.name} = {expr}")
            else:
                init.append(f'{INDENT * 2}self.add_module("{int(child.name)}", {expr})')
        forward = _Forward(self.plan).function(module)
        body = "\n".join(init) + "\n\n" + "\n".join(forward)
        name = self.classes.get(body)
        if name is None:
            base = class_name("group" if module.type_name == "Sequential" else module.type_name)
            name, counter = base, 1
            while name in self.taken:
                counter += 1
                name = f"{base}{counter}"
            self.taken.add(name)
            self.classes[body] = name
            doc = f'{INDENT}"""{module.type_name}: {_shape(module.in_shape)} -> {_shape(module.out_shape)}."""'
            self.blocks.append(f"class {name}(nn.Module):\n{doc}\n\n{body}")
        return name


def _is_numbered_chain(module: Module) -> bool:
    """A plain chain of unlabelled children: exactly what `nn.Sequential` does."""
    return module.is_sequence and all(c.name == str(i) for i, c in enumerate(module.children()))


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


class _Forward:
    """Straight-line `forward` for one module class."""

    def __init__(self, plan: _InplacePlan):
        self.plan = plan
        self.lines: list[str] = []
        self.names: set[str] = {"x", "self", "torch", "nn", "Tensor", "aux"}
        self.wires: dict[int, str] = {}  # wire key -> the variable holding it

    def fresh(self, base: str) -> str:
        if keyword.iskeyword(base):
            base += "_"
        name, counter = base, 1
        while name in self.names:
            counter += 1
            name = f"{base}_{counter}" if base[-1].isdigit() else f"{base}{counter}"
        self.names.add(name)
        return name

    def emit(self, text: str) -> None:
        self.lines.append(f"{INDENT * 2}{text}")

    def function(self, module: Module) -> list[str]:
        arguments = "x: Tensor"
        for wire in module.parameters:  # tensors passed in besides x
            self.wires[wire.key] = self.fresh(wire.name)
            arguments += f", {self.wires[wire.key]}: Tensor"
        heads = [node for node in module.body if isinstance(node, Aux)]
        if not heads:
            result = self.chain(module.body, "x", "x")
            return [f"{INDENT}def forward(self, {arguments}) -> Tensor:", *self.lines,
                    f"{INDENT * 2}return {result}"]
        # NOTE: [Auxiliary heads] as torchvision: (output, [aux outputs]) in training, output in eval.
        self.emit("aux: List[Tensor] = []")
        result = self.chain(module.body, "x", "x")
        signature = f"{INDENT}def forward(self, {arguments}) -> Union[Tensor, Tuple[Tensor, List[Tensor]]]:"
        return [signature, *self.lines, f"{INDENT * 2}if self.training:", f"{INDENT * 3}return {result}, aux",
                f"{INDENT * 2}return {result}"]

    def chain(self, nodes: list[Node], source: str, target: str) -> str:
        """Applies `nodes` to `source`, writing into `target`; returns the variable holding the result."""
        current = source
        for node in nodes:
            if isinstance(node, (Layer, Module)):
                extra = "".join(f", {self.wires[w.key]}" for w in getattr(node, "inputs", ()))
                self.emit(f"{target} = {_attribute(node.name)}({current}{extra})")
                current = target
            elif isinstance(node, Tap):
                self.wires[node.wire.key] = self.fresh(node.wire.name)
                self.emit(f"{self.wires[node.wire.key]} = {current}")
            elif isinstance(node, From):
                current = self.wires[node.wire.key]
            elif isinstance(node, Sum):
                terms = []
                for branch in node.branches:
                    terms.append(self.chain(branch, current, self.fresh(f"branch{len(terms) + 1}")))
                out = self.fresh("out")
                self.emit(f"{out} = {' + '.join(terms)}")
                current = target = out
            elif isinstance(node, Residual):
                out = self.fresh("out")
                result = self.chain(node.body, current, out)
                if node.shortcut is None:
                    identity = current
                else:
                    identity = self.fresh("identity")
                    self.emit(f"{identity} = {_attribute(node.shortcut.name)}({current})")
                if id(node) in self.plan.add_in_place and result == out:
                    self.emit(f"{out} += {identity}")
                else:
                    self.emit(f"{out} = {result} + {identity}")
                current = target = out
            elif isinstance(node, Concat):
                branches = []
                for branch in node.branches:
                    name = self.fresh(f"branch{len(branches) + 1}")
                    branches.append(self.chain(branch, current, name))
                out = self.fresh("out")
                self.emit(f"{out} = torch.cat([{', '.join(branches)}], 1)")
                current = target = out
            elif isinstance(node, Gate):
                scale = self.chain(node.body, current, self.fresh("scale"))
                out = self.fresh("out")
                self.emit(f"{out} = {current} * {scale}")
                current = target = out
            elif isinstance(node, Aux):
                self.emit("if self.training:")
                self.emit(f"{INDENT}aux.append({_attribute(node.head.name)}({current}))")
        return current


def python_source(network: Network) -> str:
    """The standalone PyTorch source of `network`; `ROOT` names the network's class."""
    return _SourceWriter(network).source()


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
FORMATS = {"torchscript": ".pt", "export": ".pt2", "onnx": ".onnx", "python": ".py"}
