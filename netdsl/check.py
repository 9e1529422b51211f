"""Stage 3 — check: `Program` + network name + overrides → annotated `graph.Network`.

Evaluates the network's statements with the incoming tensor shape in hand: expressions,
`let`, loops and conditionals, block instantiation, layer calls (validated against the
registry) and the combinators. Every layer gets its output shape, parameter count and MACs.
Pure: it never imports torch and nothing mutates its result afterwards.
"""

from __future__ import annotations

import keyword
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Callable

from . import ast
from .errors import (
    Frame, NameError_, NetDSLError, ParameterError, ShapeError, Span, TypeError_, did_you_mean, span_text,
)
from .graph import Aux, Concat, From, Gate, Layer, Module, Network, Residual, Shape, Sum, Tap, Wire
from .parse import keywords
from .layers import ARGUMENT_ALIASES, REGISTRY, REQUIRED, LayerDef, LayerProblem
from .resolve import Program
from .values import (
    BUILTINS, BlockRef, Builtin, OpRef, TensorShape, ValueProblem, article, is_number, show, type_name,
)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep the checker finite on hostile input."""

    block_depth: int = 100  # nested block instantiations (catches a block that calls itself)
    repeat: int = 10_000  # one `x N`
    layers: int = 200_000  # layers in one network
    elements: int = 2**31  # elements of one tensor, per sample
    int_bits: int = 256  # size of integers produced by arithmetic
    steps: int = 200_000  # statements executed, loop iterations and repetitions, in all (resnet152: 571)
    sequence: int = 100_000  # items in a list or characters in a string built by an expression


SYMBOLIC_PROBE = 224  # where `input [3, H, W]` is checked without --input: the ImageNet size


def shape_str(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# ---- environments and module scopes -------------------------------------------------------



class Env:
    """A lexical scope: `let` bindings, parameters and loop variables."""

    def __init__(self, parent: "Env | None" = None, input_shape: Shape | None = None):
        self.parent = parent
        self.values: dict[str, object] = {}
        self.spans: dict[str, Span] = {}
        self.input_shape = input_shape if input_shape is not None else (parent.input_shape if parent else None)

    def lookup(self, name: str):
        env = self
        while env is not None:
            if name in env.values:
                return env.values[name]
            env = env.parent
        raise KeyError(name)

    def names(self) -> set[str]:
        env, found = self, set()
        while env is not None:
            found |= set(env.values)
            env = env.parent
        return found

    def define(self, name: str, value, span: Span) -> None:
        if name in keywords():
            raise NameError_(f"'{name}' is a reserved word and cannot be used as a name", span,
                             f"use '{name}_' or another name")
        if name in self.values:
            raise NameError_(
                f"'{name}' is already defined in this scope (at line {self.spans[name].line})",
                span, hint="names are immutable; choose a new name",
            )
        self.values[name] = value
        self.spans[name] = span


@dataclass
class Scope:
    """The namespace of one module under construction: its children's names."""

    path: str  # dotted module path, for messages
    names: dict[str, Span] = field(default_factory=dict)
    stateless: dict[str, tuple] = field(default_factory=dict)  # reusable name -> (op, args)
    wires: dict[str, Wire] = field(default_factory=dict)  # tensors named in this module's forward

    def claim(self, label: str | None, span: Span, reuse_key: tuple | None = None) -> tuple[str, bool]:
        """The child's name, and whether it reuses an existing parameter-free module."""
        name = label if label is not None else str(len(self.names))
        if name in self.names:
            if reuse_key is not None and self.stateless.get(name) == reuse_key:
                return name, True
            raise NameError_(
                f"duplicate name '{name}' in module '{self.path or '<root>'}' "
                f"(first used at line {self.names[name].line})",
                span, hint="only a parameter-free layer with the same arguments may be reused by name",
            )
        self.names[name] = span
        if reuse_key is not None:
            self.stateless[name] = reuse_key
        return name, False

    def child_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


@dataclass
class Flow:
    """A dataflow chain under construction: its nodes and the current shape."""

    shape: Shape
    nodes: list = field(default_factory=list)


@dataclass
class Branches:
    """Inside `inception`: every layer statement starts a new chain from the same input."""

    in_shape: Shape
    flows: list[Flow] = field(default_factory=list)


# Names a module attribute must not take: Python keywords and nn.Module's own members.
_MODULE_MEMBERS = frozenset("""
forward training parameters buffers children modules state_dict load_state_dict train eval to
cuda cpu xpu ipu mtia type float double half bfloat16 apply register_buffer register_parameter
add_module register_module named_modules named_parameters named_buffers named_children zero_grad
requires_grad_ extra_repr get_submodule set_submodule get_parameter get_buffer get_extra_state
set_extra_state share_memory compile dump_patches call_super_init to_empty
register_forward_hook register_forward_pre_hook register_backward_hook
register_full_backward_hook register_full_backward_pre_hook register_state_dict_pre_hook
register_state_dict_post_hook register_load_state_dict_pre_hook register_load_state_dict_post_hook
""".split())
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_label(name: str, span: Span) -> str:
    if not _IDENTIFIER.match(name):
        raise NameError_(f"invalid layer name '{name}'", span,
                         hint="names are letters, digits and '_', not starting with a digit")
    if keyword.iskeyword(name) or name in _MODULE_MEMBERS or name.startswith("__"):
        raise NameError_(f"'{name}' cannot name a layer: it is reserved by Python or torch.nn.Module",
                         span, hint=f"use '{name}_' or another name")
    return name


_ARITHMETIC: dict[str, Callable] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
}
_COMPARE: dict[str, Callable] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


class Checker:
    def __init__(self, program: Program, limits: Limits = Limits()):
        self.program = program
        self.limits = limits
        self.trace: list[Frame] = []
        self.layer_count = 0
        self.steps = 0
        self.globals = Env()
        self.label_span: Span | None = None  # the label of the layer statement being evaluated
        self.scope: Scope | None = None  # the module whose statement is being evaluated
        self.wire_count = 0
        self.root_flow: Flow | None = None  # the network's own chain: where auxiliary heads may tap
        self.declared_input: Shape | None = None  # set when checking at another size than declared
        self.shortcuts: list = []  # each generated residual shortcut, in order: "identity" or a stride
        self.replay: list = []  # the same, from the declared size, kept when checking at another size
        self.symbolic = False  # the input statement names its sizes (`input [3, H, W]`)
        self.reads_input_size: Span | None = None  # the first read of a tensor's size (in.height)

    # ---- errors ----------------------------------------------------------------------------
    def error(self, cls, message: str, span: Span | None, hint: str | None = None) -> NetDSLError:
        return cls(message, span, hint, tuple(self.trace))

    # ---- networks --------------------------------------------------------------------------
    def network(self, decl: ast.Decl, overrides: dict, input_shape: Shape | None = None) -> Network:
        """`input_shape`, when given, replaces the declared `input [...]` (same rank)."""
        name = decl.name
        defaults: dict[str, object] = {}
        chain = [decl.name]
        while isinstance(decl, ast.VariantDef):
            if decl.base in chain:
                raise self.error(NameError_, f"variant cycle: {' -> '.join(chain + [decl.base])}", decl.base_span,
                                 "a variant must be based on a network defined with a body")
            chain.append(decl.base)
            base = self.program.decls.get(decl.base)
            if not isinstance(base, (ast.NetworkDef, ast.VariantDef)):
                candidates = [d.name for d in self.program.decls.values()
                              if isinstance(d, (ast.NetworkDef, ast.VariantDef))]
                raise self.error(NameError_, f"unknown network '{decl.base}'", decl.base_span,
                                 did_you_mean(decl.base, candidates) or "import the file that defines it")
            for arg in decl.args:
                if arg.name is None:
                    raise self.error(TypeError_, "variant arguments must be named, e.g. depth=152", arg.span)
                defaults.setdefault(arg.name, (self.eval(arg.value, self.globals), arg.span))
            decl = base
        assert isinstance(decl, ast.NetworkDef)
        param_names = [p.name for p in decl.params]
        for key, (value, span) in defaults.items():
            if key not in param_names:
                raise self.error(NameError_, f"network '{decl.name}' has no parameter '{key}'", span,
                                 did_you_mean(key, param_names))
        for key in overrides:
            if key not in param_names:
                hint = did_you_mean(key, param_names) or f"its parameters are: {', '.join(param_names) or 'none'}"
                raise NameError_(f"network '{name}' has no parameter '{key}'", decl.span, hint)
        env = Env(self.globals)
        arguments = {}
        for param in decl.params:
            if param.name in overrides:
                value = overrides[param.name]
                if isinstance(value, ast.Expr):  # from the command line: evaluated like source
                    value = self.eval(value, self.globals)
            elif param.name in defaults:
                value = defaults[param.name][0]
            elif param.default is not None:
                value = self.eval(param.default, env)
            else:
                raise self.error(NameError_, f"network parameter '{param.name}' has no default", param.span,
                                 f"give it one, or pass -D {param.name}=VALUE")
            env.define(param.name, value, param.span)
            arguments[param.name] = value

        scope = Scope(path="")
        flow: Flow | None = None
        position = 0
        for position, stmt in enumerate(decl.body):
            if isinstance(stmt, ast.InputStmt):
                dims, input_names = self.input_dims(stmt, env, input_shape)
                flow = Flow(shape=dims)
                env.input_shape = flow.shape
                break
            if not isinstance(stmt, (ast.Let, ast.Assert)):
                raise self.error(ShapeError, "layers before the input shape is declared", stmt.span,
                                 "start the network with 'input [channels, height, width]'")
            self.statement(stmt, env, scope, None)
        if flow is None:
            raise self.error(ShapeError, f"network '{decl.name}' declares no input shape", decl.span,
                             "add 'input [3, 224, 224]' (channels, height, width) as its first statement")
        input_shape = flow.shape
        self.root_flow = flow
        try:
            self.run(decl.body[position + 1:], env, scope, flow)
        except NetDSLError as error:
            if self.declared_input is not None:
                note_resized(error, input_shape, self.declared_input)
            raise
        root = self.module("", "network", name, flow, input_shape, decl.span)
        return Network(name=name, file=self.program.main_file, arguments=arguments,
                       input_shape=input_shape, root=root, input_names=input_names,
                       reads_input_size=self.reads_input_size)

    def input_dims(self, stmt: ast.InputStmt, env: Env, given: Shape | None) -> tuple[Shape, tuple]:
        """The shape to check at (`given`, or the declared one) and the names of its symbolic sizes:
        in `input [3, H, W]`, H and W are names bound nowhere, checked at `given` or at SYMBOLIC_PROBE."""
        names = tuple(item.name if isinstance(item, ast.Name) and self.unbound(item.name, env) else None
                      for item in stmt.dims.items)
        dims = tuple(SYMBOLIC_PROBE if name else self.eval(item, env) for item, name in zip(stmt.dims.items, names))
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise self.error(TypeError_, f"input shape must be a list of positive integers, got {show(dims)}",
                             stmt.span, "e.g. input [3, 224, 224] (channels, height, width; batch is implicit)")
        symbolic = [name for name in names if name]
        self.symbolic = bool(symbolic)
        if symbolic and (len(dims) != 3 or names[0]):
            raise self.error(TypeError_, f"only the height and width of an input can be symbolic, not "
                             f"'{symbolic[0] if len(dims) != 3 else names[0]}'", stmt.span,
                             "e.g. input [3, H, W]; the channels are fixed by the first layer's weights")
        if len(symbolic) == 2 and names[1] == names[2]:
            raise self.error(NameError_, f"'{names[1]}' names both the height and the width", stmt.span,
                             "use two names, e.g. input [3, H, W]; sizes are analysed one dimension at a time")
        if given is None:
            return dims, names
        if len(given) != len(dims):
            raise self.error(ShapeError, f"input size {shape_str(given)} has {len(given)} "
                             f"dimension{'s' if len(given) > 1 else ''}, but the network declares "
                             f"{shape_str(dims)}", stmt.span,
                             "give channels x height x width, e.g. 3x320x320" if len(dims) == 3
                             else f"give {len(dims)} dimension{'s' if len(dims) > 1 else ''}")
        if given != dims and not symbolic:
            self.declared_input = dims
        return given, names

    def unbound(self, name: str, env: Env) -> bool:
        """A name nothing defines (nor nearly spells): in an input statement, a symbolic size."""
        try:
            env.lookup(name)
            return False
        except KeyError:
            pass
        known = env.names() | set(self.program.decls) | set(REGISTRY) | set(BUILTINS)
        return name not in known and did_you_mean(name, known) is None


    def module(self, name: str, kind: str, type_name_: str, flow: Flow, in_shape: Shape, span: Span) -> Module:
        module = Module(name=name, kind=kind, type_name=type_name_, body=flow.nodes,
                        in_shape=in_shape, out_shape=flow.shape, span=span, trace=tuple(self.trace))
        for child in module.children():
            module.params += child.params
            module.macs += child.macs
        return module

    # ---- statements ------------------------------------------------------------------------
    def run(self, stmts: list[ast.Stmt], env: Env, scope: Scope, flow: Flow | None,
            branches: Branches | None = None) -> None:
        for stmt in stmts:
            self.statement(stmt, env, scope, flow, branches)

    def tick(self, span: Span) -> None:
        """One unit of work; a small file must not be able to make the checker run for ever."""
        self.steps += 1
        if self.steps > self.limits.steps:
            raise self.error(ParameterError, f"the network takes more than {self.limits.steps:,} evaluation steps "
                             "to build", span, "look for a loop or a recursive block that does not terminate soon")

    def statement(self, stmt: ast.Stmt, env: Env, scope: Scope, flow: Flow | None,
                  branches: Branches | None = None) -> None:
        self.tick(stmt.span)
        outer, self.scope = self.scope, scope  # expressions may name the scope's tensors
        try:
            self._statement(stmt, env, scope, flow, branches)
        finally:
            self.scope = outer

    def _statement(self, stmt: ast.Stmt, env: Env, scope: Scope, flow: Flow | None,
                   branches: Branches | None = None) -> None:
        if isinstance(stmt, ast.Tap):
            if flow is None:
                raise self.error(ShapeError, f"'tap {stmt.name}' cannot stand alone as a branch", stmt.span,
                                 "tap before the inception/add, or inside a chain's block")
            if stmt.name in keywords():
                raise self.error(NameError_, f"'{stmt.name}' is a reserved word and cannot be used as a name",
                                 stmt.span)
            self.wire_count += 1
            wire = Wire(stmt.name, flow.shape, self.wire_count)
            scope.wires[stmt.name] = wire
            flow.nodes.append(Tap(wire=wire, in_shape=flow.shape, out_shape=flow.shape, span=stmt.span))
        elif isinstance(stmt, ast.Let):
            env.define(stmt.name, self.eval(stmt.value, env), stmt.span)
        elif isinstance(stmt, ast.Assert):
            test = self.eval(stmt.test, env)
            if not isinstance(test, bool):
                raise self.error(TypeError_, f"assert expects a condition, got {type_name(test)} {show(test)}",
                                 stmt.test.span)
            if not test:
                failed = span_text(stmt.test.span) or "condition"
                raise self.error(ParameterError, stmt.message or f"assertion failed: {failed}", stmt.span)
        elif isinstance(stmt, ast.For):
            items = self.eval(stmt.iterable, env)
            if isinstance(items, dict):
                items = tuple(items.items())
            if not isinstance(items, tuple):
                raise self.error(TypeError_, f"for expects a list, got {type_name(items)} {show(items)}",
                                 stmt.iterable.span, "use range(n) to count")
            for item in items:
                self.tick(stmt.span)
                inner = Env(env)
                self.bind_targets(stmt, item, inner)
                self.run(stmt.body, inner, scope, flow, branches)
        elif isinstance(stmt, ast.If):
            for test_expr, body in stmt.branches:
                test = self.eval(test_expr, env)
                if not isinstance(test, bool):
                    raise self.error(TypeError_, f"if expects a condition, got {type_name(test)} {show(test)}",
                                     test_expr.span)
                if test:
                    self.run(body, Env(env), scope, flow, branches)
                    return
            if stmt.orelse is not None:
                self.run(stmt.orelse, Env(env), scope, flow, branches)
        elif isinstance(stmt, ast.InputStmt):
            raise self.error(ShapeError, "'input' belongs at the start of a network", stmt.span,
                             "blocks receive their input from the caller; read its shape with in.channels")
        elif isinstance(stmt, (ast.LayerStmt, ast.Chain)):
            if branches is not None:  # inside inception: every layer statement or chain is a branch
                flow = Flow(branches.in_shape)
                branches.flows.append(flow)
            for layer_stmt in stmt.stmts if isinstance(stmt, ast.Chain) else [stmt]:
                self.layer_statement(layer_stmt, env, scope, flow)
        else:  # pragma: no cover - the parser produces no other statements
            raise TypeError(f"unknown statement {stmt!r}")

    def bind_targets(self, stmt: ast.For, item, env: Env) -> None:
        if len(stmt.targets) == 1:
            env.define(stmt.targets[0], item, stmt.span)
            return
        if not isinstance(item, tuple) or len(item) != len(stmt.targets):
            raise self.error(TypeError_, f"cannot unpack {show(item)} into {len(stmt.targets)} names "
                             f"({', '.join(stmt.targets)})", stmt.span)
        for target, value in zip(stmt.targets, item):
            env.define(target, value, stmt.span)

    def layer_statement(self, stmt: ast.LayerStmt, env: Env, scope: Scope, flow: Flow,
                        default_label: str | None = None) -> None:
        label = self.label(stmt.label, env) if stmt.label is not None else default_label
        self.label_span = stmt.label.span if stmt.label is not None else None
        if stmt.repeat is None:
            self.unit(stmt.unit, label, env, scope, flow)
            return
        count = self.eval(stmt.repeat, env)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise self.error(TypeError_, f"repeat count must be a non-negative integer, got {show(count)}",
                             stmt.repeat.span)
        if count > self.limits.repeat:
            raise self.error(ParameterError, f"repeat count {count} exceeds the limit of {self.limits.repeat}",
                             stmt.repeat.span)
        if label is None:
            for _ in range(count):
                self.tick(stmt.span)
                self.unit(stmt.unit, None, env, scope, flow)
            return
        name, _ = scope.claim(label, self.label_span or stmt.span)
        inner_scope, inner = Scope(scope.child_path(name)), Flow(flow.shape)
        for _ in range(count):
            self.tick(stmt.span)
            self.unit(stmt.unit, None, env, inner_scope, inner)
        self.append(flow, self.module(name, "sequential", "Sequential", inner, flow.shape, stmt.span))

    def label(self, label: ast.Label, env: Env) -> str:
        parts = []
        for part in label.parts:
            if isinstance(part, str):
                parts.append(part)
                continue
            value = self.eval(part, env)
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                raise self.error(TypeError_, f"label templates take integers or strings, got {show(value)}",
                                 label.span)
            parts.append(str(value))
        return check_label("".join(parts), label.span)

    def append(self, flow: Flow, node) -> None:
        flow.nodes.append(node)
        flow.shape = node.out_shape

    # ---- units -----------------------------------------------------------------------------
    def unit(self, unit: ast.Unit, label: str | None, env: Env, scope: Scope, flow: Flow) -> None:
        label_span = self.label_span if label is not None else None
        self.label_span = None  # consumed: nested statements set their own
        if isinstance(unit, ast.Call):
            self.call(unit, label, env, scope, flow, label_span)
        elif isinstance(unit, ast.Group):
            name, _ = scope.claim(label, label_span or unit.span)
            inner = Flow(flow.shape)
            self.run(unit.body, Env(env), Scope(scope.child_path(name)), inner)
            self.append(flow, self.module(name, "sequential", "Sequential", inner, flow.shape, unit.span))
        elif isinstance(unit, ast.Aux):
            self.aux(unit, label, label_span, env, scope, flow)
        elif isinstance(unit, ast.From):
            if label is not None:
                raise self.error(TypeError_, "'from' selects a tensor and takes no label", label_span or unit.span)
            wire = self.wire(unit.name, scope, unit.span)
            flow.nodes.append(From(wire=wire, in_shape=flow.shape, out_shape=wire.shape, span=unit.span))
            flow.shape = wire.shape
        elif isinstance(unit, (ast.Residual, ast.Inception, ast.Dense, ast.Gate, ast.Add)):
            if label is None:  # transparent: its layers belong to the enclosing module
                self.combinator(unit, env, scope, flow)
                return
            name, _ = scope.claim(label, label_span or unit.span)
            inner = Flow(flow.shape)
            self.combinator(unit, env, Scope(scope.child_path(name)), inner)
            self.append(flow, self.module(name, "block", type(unit).__name__, inner, flow.shape, unit.span))
        else:  # pragma: no cover
            raise TypeError(f"unknown unit {unit!r}")

    def combinator(self, unit, env: Env, scope: Scope, flow: Flow) -> None:
        if isinstance(unit, ast.Residual):
            self.residual(unit, env, scope, flow)
        elif isinstance(unit, ast.Inception):
            self.inception(unit, env, scope, flow)
        elif isinstance(unit, ast.Dense):
            self.dense(unit, env, scope, flow)
        elif isinstance(unit, ast.Add):
            self.add(unit, env, scope, flow)
        else:
            self.gate(unit, env, scope, flow)

    def wire(self, name: str, scope: Scope, span: Span) -> Wire:
        wire = scope.wires.get(name)
        if wire is None:
            raise self.error(NameError_, f"no tensor named '{name}' in module '{scope.path or '<root>'}'", span,
                             did_you_mean(name, scope.wires) or "name the current tensor with 'tap NAME' first; "
                             "a block sees another module's tensors only when they are passed as arguments")
        return wire

    def branches(self, unit, kind: str, env: Env, scope: Scope, in_shape: Shape) -> list[Flow]:
        """Runs an inception or add body: every layer statement or chain is a branch from `in_shape`."""
        collected = Branches(in_shape)
        self.run(unit.body, Env(env), scope, None, collected)
        if not collected.flows:
            raise self.error(ShapeError, f"{kind} needs at least one branch", unit.span)
        return collected.flows

    def add(self, unit: ast.Add, env: Env, scope: Scope, flow: Flow) -> None:
        in_shape = flow.shape
        branches = self.branches(unit, "add", env, scope, in_shape)
        first = branches[0].shape
        for index, branch in enumerate(branches):
            if branch.shape != first:
                raise self.error(ShapeError, f"add: branch 1 gives {shape_str(first)} but branch {index + 1} gives "
                                 f"{shape_str(branch.shape)}", unit.span, "summed branches need identical shapes")
        self.append(flow, Sum(branches=[b.nodes for b in branches], in_shape=in_shape, out_shape=first,
                              span=unit.span))

    def dense(self, unit: ast.Dense, env: Env, scope: Scope, flow: Flow) -> None:
        in_shape = flow.shape
        body = Flow(in_shape)
        self.run(unit.body, Env(env), scope, body)
        if len(in_shape) != 3 or len(body.shape) != 3 or body.shape[1:] != in_shape[1:]:
            raise self.error(ShapeError, f"dense: the body turns {shape_str(in_shape)} into {shape_str(body.shape)}, "
                             "but concatenation with the input needs the same height and width", unit.span,
                             "keep stride 1 and 'same' padding inside a dense body")
        out_shape = (in_shape[0] + body.shape[0],) + in_shape[1:]
        self.check_size(out_shape, unit.span)
        self.append(flow, Concat(branches=[[], body.nodes], in_shape=in_shape, out_shape=out_shape, span=unit.span))

    def gate(self, unit: ast.Gate, env: Env, scope: Scope, flow: Flow) -> None:
        in_shape = flow.shape
        body = Flow(in_shape)
        self.run(unit.body, Env(env), scope, body)
        broadcast = body.shape == in_shape or (
            len(in_shape) == 3 and body.shape == (in_shape[0], 1, 1))
        if not broadcast:
            expected = shape_str((in_shape[0], 1, 1)) if len(in_shape) == 3 else shape_str(in_shape)
            raise self.error(ShapeError, f"gate: the body gives {shape_str(body.shape)}, but multiplying the input "
                             f"{shape_str(in_shape)} needs {expected} or {shape_str(in_shape)}", unit.span,
                             "end the body with as many channels as its input, e.g. conv(in.channels, 1)")
        self.append(flow, Gate(body=body.nodes, in_shape=in_shape, out_shape=in_shape, span=unit.span))

    def aux(self, unit: ast.Aux, label: str | None, label_span: Span | None, env: Env, scope: Scope,
            flow: Flow) -> None:
        if flow is not self.root_flow:
            raise self.error(ShapeError, "auxiliary heads belong in the network's own body", unit.span,
                             "move 'aux { ... }' out of blocks, groups and combinators")
        name, _ = scope.claim(label, label_span or unit.span)
        inner = Flow(flow.shape)
        self.run(unit.body, Env(env), Scope(scope.child_path(name)), inner)
        head = self.module(name, "sequential", "Sequential", inner, flow.shape, unit.span)
        flow.nodes.append(Aux(head=head, in_shape=flow.shape, out_shape=flow.shape, span=unit.span))

    def residual(self, unit: ast.Residual, env: Env, scope: Scope, flow: Flow) -> None:
        in_shape = flow.shape
        body = Flow(in_shape)
        self.run(unit.body, Env(env), scope, body)
        shortcut = None
        if unit.shortcut is not None:
            side = Flow(in_shape)
            self.layer_statement(unit.shortcut, Env(env), scope, side, default_label="downsample")
            shortcut, shortcut_shape = side.nodes[0], side.shape
        else:
            shortcut, shortcut_shape = self.generated_shortcut(in_shape, body.shape, scope, unit.span)
        if shortcut_shape != body.shape:
            raise self.error(
                ShapeError,
                f"residual add: the body gives {shape_str(body.shape)} but the shortcut gives "
                f"{shape_str(shortcut_shape)}",
                unit.span,
                "make the shortcut produce the body's shape, e.g. 'shortcut { conv(C, 1, stride=S, bias=false) bn }'"
                if unit.shortcut is not None else None,
            )
        self.append(flow, Residual(body=body.nodes, shortcut=shortcut, in_shape=in_shape,
                                   out_shape=body.shape, span=unit.span))

    def generated_shortcut(self, in_shape: Shape, out_shape: Shape, scope: Scope,
                           span: Span) -> tuple[Module | None, Shape]:
        """A residual without `shortcut`: the identity, or a projection when the body changes the shape.
        Checked at another input size, it keeps what it had at the declared size (`replay`)."""
        kept = self.replay.pop(0) if self.replay else None
        if kept == "identity" or (kept is None and out_shape == in_shape):
            self.shortcuts.append("identity")
            return None, in_shape
        module = self.projection(in_shape, out_shape, scope, span, stride=kept)
        self.shortcuts.append(module.body[0].args["stride"])
        return module, module.out_shape

    def projection(self, in_shape: Shape, out_shape: Shape, scope: Scope, span: Span, stride=None) -> Module:
        """torchvision's `downsample`: a strided 1×1 conv and batch norm matching the body's shape
        (with `stride` given, that stride, whatever shape it gives)."""
        explain = (f"residual add: the body changes the shape from {shape_str(in_shape)} to "
                   f"{shape_str(out_shape)} and no projection can match it")
        if len(in_shape) != 3 or len(out_shape) != 3:
            raise self.error(ShapeError, explain, span, "a residual body must keep [channels, height, width] form")
        if stride is None:
            strides = []
            for size, target in zip(in_shape[1:], out_shape[1:]):
                found = next((s for s in range(1, size + 1) if (size - 1) // s + 1 == target), None)
                if found is None:
                    raise self.error(ShapeError, explain, span,
                                     "the spatial size may only shrink by striding; give the shortcut explicitly")
                strides.append(found)
            stride = strides[0] if strides[0] == strides[1] else tuple(strides)
        if "downsample" in scope.names:
            raise self.error(NameError_, f"module '{scope.path or '<root>'}' already has a 'downsample'; this "
                             "residual needs a generated projection of the same name", span,
                             "label the residual ('name: residual { ... }') so its projection gets its own module, "
                             "or give it an explicit 'shortcut name: { ... }'")
        name, _ = scope.claim("downsample", span)
        inner_scope, inner = Scope(scope.child_path(name)), Flow(in_shape)
        self.layer(REGISTRY["conv"], {"out": out_shape[0], "kernel": 1, "stride": stride, "pad": 0, "dilation": 1,
                                      "groups": 1, "bias": False}, None, inner_scope, inner, span)
        self.layer(REGISTRY["bn"], {"eps": 1e-5, "momentum": 0.1}, None, inner_scope, inner, span)
        return self.module(name, "sequential", "Sequential", inner, in_shape, span)

    def inception(self, unit: ast.Inception, env: Env, scope: Scope, flow: Flow) -> None:
        in_shape = flow.shape
        branches = self.branches(unit, "inception", env, scope, in_shape)
        first = branches[0].shape
        for index, branch in enumerate(branches):
            if len(branch.shape) != 3 or branch.shape[1:] != first[1:]:
                raise self.error(
                    ShapeError,
                    f"inception branches disagree on spatial size: branch 1 gives {shape_str(first)}, "
                    f"branch {index + 1} gives {shape_str(branch.shape)}",
                    unit.span,
                    "concatenation needs equal height and width; adjust stride or padding",
                )
        out_shape = (sum(b.shape[0] for b in branches),) + first[1:]
        self.check_size(out_shape, unit.span)
        self.append(flow, Concat(branches=[b.nodes for b in branches], in_shape=in_shape,
                                 out_shape=out_shape, span=unit.span))

    # ---- calls -----------------------------------------------------------------------------
    def call(self, call: ast.Call, label: str | None, env: Env, scope: Scope, flow: Flow,
             label_span: Span | None = None) -> None:
        target = self.callee(call.name, env, call.name_span)
        if isinstance(target, OpRef):
            op = REGISTRY[target.name]
            args, arg_spans = self.bind_op(op, call, env)
            self.layer(op, args, label, scope, flow, call.span, arg_spans, label_span)
        elif isinstance(target, BlockRef):
            name, _ = scope.claim(label, label_span or call.span)
            self.instantiate(target.decl, call, env, name, scope, flow)
        else:
            raise self.error(TypeError_, f"'{call.name}' is {article(type_name(target))} ({show(target)}), "
                             "not a layer or block", call.name_span)

    def callee(self, name: str, env: Env, span: Span):
        try:
            return env.lookup(name)
        except KeyError:
            pass
        decl = self.program.decls.get(name)
        if isinstance(decl, ast.BlockDef):
            return BlockRef(decl)
        if isinstance(decl, (ast.NetworkDef, ast.VariantDef)):
            raise self.error(TypeError_, f"'{name}' is a network and cannot be used as a layer", span,
                             "turn the reusable part into a block")
        if name in REGISTRY:
            return OpRef(name)
        candidates = set(REGISTRY) | {d.name for d in self.program.decls.values() if isinstance(d, ast.BlockDef)}
        candidates |= {n for n in env.names() if isinstance(env.lookup(n), (BlockRef, OpRef))}
        raise self.error(NameError_, f"unknown layer or block '{name}'", span,
                         did_you_mean(name, candidates) or "define it with 'block', import it, or see 'netdsl layers'")

    def layer(self, op: LayerDef, args: dict, label: str | None, scope: Scope, flow: Flow, span: Span,
              arg_spans: dict | None = None, label_span: Span | None = None) -> None:
        in_shape = flow.shape
        try:
            out_shape = op.shape(in_shape, args)
        except LayerProblem as problem:
            cls = ParameterError if problem.kind == "param" else ShapeError
            where = (arg_spans or {}).get(problem.param, span)
            raise self.error(cls, problem.message, where, problem.hint) from None
        self.check_size(out_shape, span)
        self.layer_count += 1
        if self.layer_count > self.limits.layers:
            raise self.error(ParameterError, f"more than {self.limits.layers} layers", span)
        params = op.count(in_shape, args)
        # the same constructor call: a parameter-free module that can serve every use (like torchvision's `relu`)
        reuse_key = (op.name, repr(op.torch(in_shape, args))) if params == 0 and label else None
        name, shared = scope.claim(label, label_span or span, reuse_key)
        self.append(flow, Layer(
            name=name, op=op.name, args=args, in_shape=in_shape, out_shape=out_shape,
            params=params, macs=op.macs(in_shape, out_shape, args),
            span=span, trace=tuple(self.trace), shared=shared,
        ))

    def check_size(self, shape: Shape, span: Span) -> None:
        if math.prod(shape) > self.limits.elements:
            raise self.error(ShapeError, f"tensor {shape_str(shape)} has {math.prod(shape)} elements per sample, "
                             f"more than the limit of {self.limits.elements}", span)

    def match_arguments(self, call: ast.Call, names: list[str], what: str, env: Env, too_many: str,
                        hint: str, aliases: dict | None = None) -> dict[str, tuple[object, Span]]:
        """Pairs a call's arguments with parameter `names`: {name: (value, span of the value)}."""
        aliases = aliases or {}
        given: dict[str, tuple[object, Span]] = {}
        positional_done = False
        for index, arg in enumerate(call.args):
            if arg.name is None:
                if positional_done:
                    raise self.error(TypeError_, "positional argument after a keyword argument", arg.span)
                if index >= len(names):
                    raise self.error(TypeError_, too_many, arg.span)
                key = names[index]
            else:
                positional_done = True
                key = aliases.get(arg.name, arg.name)
                if key not in names:
                    raise self.error(NameError_, f"{what} has no parameter '{arg.name}'", arg.span,
                                     did_you_mean(arg.name, names + list(aliases)) or hint)
            if key in given:
                raise self.error(TypeError_, f"{what} got '{key}' twice", arg.span)
            given[key] = (self.eval(arg.value, env), arg.value.span)
        return given

    def bind_op(self, op: LayerDef, call: ast.Call, env: Env) -> tuple[dict, dict]:
        names = [p.name for p in op.params]
        given = self.match_arguments(
            call, names, op.name, env,
            too_many=f"{op.name} takes at most {len(names)} positional arguments ({', '.join(names)}), "
                     f"got {len(call.args)}",
            hint=f"{op.name} takes: {', '.join(names)}" if names else f"{op.name} takes no arguments",
            aliases=ARGUMENT_ALIASES.get(op.name, {}),
        )
        bound: dict[str, object] = {}
        spans = {key: span for key, (_, span) in given.items()}
        for param in op.params:
            if param.name in given:
                value, span = given[param.name]
                bound[param.name] = self.coerce(op, param, value, span)
            elif param.default is REQUIRED:
                raise self.error(TypeError_, f"{op.name} is missing its '{param.name}' argument"
                                 f"{' (' + param.doc + ')' if param.doc else ''}", call.span,
                                 f"{op.name}({', '.join(p.name for p in op.params if p.default is REQUIRED)}, ...)")
            else:
                bound[param.name] = param.default(bound) if callable(param.default) else param.default
        return bound, spans

    def coerce(self, op: LayerDef, param, value, span: Span):
        expected = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                    "pair": "an integer or a list of two integers"}[param.kind]

        def fail(hint=None):
            if hint is None and isinstance(value, float) and param.kind in ("int", "pair"):
                hint = "use // for integer division, or floor()/round()"
            return self.error(TypeError_, f"{op.name}: '{param.name}' expects {expected}, got "
                              f"{type_name(value)} {show(value)}", span, hint)

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if param.default is None and value is None:
            return None
        if param.kind == "int":
            if not is_int(value):
                raise fail()
        elif param.kind == "float":
            if not is_number(value) or not math.isfinite(value):
                raise fail()
            value = float(value)
        elif param.kind == "bool":
            if not isinstance(value, bool):
                raise fail()
        elif param.kind == "str":
            if not isinstance(value, str):
                raise fail()
            if param.choices and value not in param.choices:
                raise self.error(ParameterError, f"{op.name}: '{param.name}' must be one of "
                                 f"{', '.join(map(show, param.choices))}, got {show(value)}", span)
        elif param.kind == "pair":
            if isinstance(value, tuple):
                if len(value) != 2 or not all(is_int(v) for v in value):
                    raise fail()
                value = value[0] if value[0] == value[1] else value
            elif not is_int(value):
                raise fail()
        if param.minimum is not None and value is not None:
            if min(value if isinstance(value, tuple) else (value,)) < param.minimum:
                raise self.error(ParameterError, f"{op.name}: '{param.name}' must be at least {param.minimum}, "
                                 f"got {show(value)}", span)
        return value

    def instantiate(self, decl: ast.BlockDef, call: ast.Call, caller: Env, name: str, scope: Scope,
                    flow: Flow) -> None:
        if len(self.trace) >= self.limits.block_depth:
            raise self.error(ParameterError, f"blocks nested more than {self.limits.block_depth} deep "
                             f"(does '{decl.name}' call itself?)", call.span)
        env = Env(self.globals, input_shape=flow.shape)
        params = [p.name for p in decl.params]
        given = self.match_arguments(
            call, params, f"block '{decl.name}'", caller,
            too_many=f"block '{decl.name}' takes {len(params)} arguments ({', '.join(params)}), got {len(call.args)}",
            hint=f"its parameters are: {', '.join(params) or 'none'}",
        )
        path = scope.child_path(name)
        self.trace.append(Frame(decl.name, decl.span, call.span, path))
        try:
            for param in decl.params:
                if param.name in given:
                    value = given[param.name][0]
                elif param.default is not None:
                    value = self.eval(param.default, env)
                else:
                    raise self.error(TypeError_, f"block '{decl.name}' is missing its '{param.name}' argument",
                                     call.span, f"{decl.name}({', '.join(params)})")
                env.define(param.name, value, param.span)
            inner, block_scope = Flow(flow.shape), Scope(path)
            inputs, parameters = [], []
            for param in decl.params:  # tensors passed in become the block's own named tensors
                value = env.values[param.name]
                if isinstance(value, Wire):
                    self.wire_count += 1
                    local = Wire(param.name, value.shape, self.wire_count)
                    block_scope.wires[param.name] = local
                    env.values[param.name] = local
                    inputs.append(value)
                    parameters.append(local)
            self.run(decl.body, Env(env), block_scope, inner)
            module = self.module(name, "block", decl.name, inner, flow.shape, call.span)
            module.inputs, module.parameters = tuple(inputs), tuple(parameters)
        finally:
            self.trace.pop()
        self.append(flow, module)

    # ---- expressions -----------------------------------------------------------------------
    def eval(self, expr: ast.Expr, env: Env):
        method = getattr(self, f"eval_{type(expr).__name__}")
        return method(expr, env)

    def eval_Literal(self, expr: ast.Literal, env: Env):
        if isinstance(expr.value, float) and not math.isfinite(expr.value):
            raise self.error(TypeError_, "number out of range", expr.span)
        return expr.value

    def eval_ListExpr(self, expr: ast.ListExpr, env: Env):
        return tuple(self.eval(item, env) for item in expr.items)

    def eval_DictExpr(self, expr: ast.DictExpr, env: Env):
        result = {}
        for key_expr, value_expr in expr.items:
            key = self.eval(key_expr, env)
            if not isinstance(key, (int, str, bool, float)):
                raise self.error(TypeError_, f"dictionary keys must be numbers or strings, got {show(key)}",
                                 key_expr.span)
            result[key] = self.eval(value_expr, env)
        return result

    def eval_Name(self, expr: ast.Name, env: Env):
        try:
            return env.lookup(expr.name)
        except KeyError:
            pass
        if self.scope is not None and expr.name in self.scope.wires:
            return self.scope.wires[expr.name]
        decl = self.program.decls.get(expr.name)
        if isinstance(decl, ast.BlockDef):
            return BlockRef(decl)
        if expr.name in REGISTRY:
            return OpRef(expr.name)
        if expr.name in BUILTINS:
            return BUILTINS[expr.name]
        candidates = env.names() | set(BUILTINS)
        raise self.error(NameError_, f"undefined name '{expr.name}'", expr.span, did_you_mean(expr.name, candidates))

    def eval_InputRef(self, expr: ast.InputRef, env: Env):
        if env.input_shape is None:
            raise self.error(NameError_, "'in' is only defined inside a block or after the network's input",
                             expr.span)
        return TensorShape(env.input_shape)

    def eval_Attr(self, expr: ast.Attr, env: Env):
        value = self.eval(expr.value, env)
        if isinstance(value, TensorShape):
            spatial = len(value.shape) == 3
            sizes = ("height", "h", "width", "w", "shape") if spatial else ("features", "c", "channels", "shape")
            if expr.attr in sizes and self.reads_input_size is None:  # the structure may depend on the input size
                self.reads_input_size = expr.span
            try:
                return value.attr(expr.attr)
            except KeyError:
                if expr.attr in TensorShape.ATTRIBUTES:
                    hint = "height and width exist only for [channels, height, width] inputs"
                else:
                    hint = (did_you_mean(expr.attr, TensorShape.ATTRIBUTES)
                            or f"available: {', '.join(TensorShape.ATTRIBUTES)}")
                raise self.error(NameError_, f"the input {value} has no '{expr.attr}'", expr.span, hint) from None
        raise self.error(TypeError_, f"a {type_name(value)} has no attributes (reading '.{expr.attr}')", expr.span)

    def eval_Index(self, expr: ast.Index, env: Env):
        value = self.eval(expr.value, env)
        index = self.eval(expr.index, env)
        if isinstance(value, dict):
            try:
                found = index in value
            except TypeError:  # an unhashable key such as a dict
                raise self.error(TypeError_, f"a {type_name(index)} cannot be a dictionary key", expr.index.span) from None
            if not found:
                raise self.error(NameError_, f"key {show(index)} is not in {show(value)}", expr.index.span,
                                 f"known keys: {', '.join(show(k) for k in value)}")
            return value[index]
        if not isinstance(value, (tuple, str)):
            raise self.error(TypeError_, f"cannot index a {type_name(value)}", expr.span)
        if isinstance(index, bool) or not isinstance(index, int):
            raise self.error(TypeError_, f"list index must be an integer, got {show(index)}", expr.index.span)
        if not -len(value) <= index < len(value):
            raise self.error(TypeError_, f"index {index} is out of range for a list of {len(value)}",
                             expr.index.span)
        return value[index]

    def eval_Slice(self, expr: ast.Slice, env: Env):
        value = self.eval(expr.value, env)
        if not isinstance(value, (tuple, str)):
            raise self.error(TypeError_, f"cannot slice {article(type_name(value))}", expr.span)
        bounds = []
        for bound in (expr.start, expr.stop):
            item = None if bound is None else self.eval(bound, env)
            if item is not None and (isinstance(item, bool) or not isinstance(item, int)):
                raise self.error(TypeError_, f"slice bounds must be integers, got {show(item)}", bound.span)
            bounds.append(item)
        return value[bounds[0]:bounds[1]]

    def eval_Unary(self, expr: ast.Unary, env: Env):
        value = self.eval(expr.operand, env)
        if expr.op == "not":
            if not isinstance(value, bool):
                raise self.error(TypeError_, f"'not' expects true or false, got {show(value)}", expr.span)
            return not value
        if not is_number(value):
            raise self.error(TypeError_, f"cannot negate {type_name(value)} {show(value)}", expr.span)
        return -value

    def eval_Binary(self, expr: ast.Binary, env: Env):
        if expr.op in ("and", "or"):
            left = self.eval(expr.left, env)
            if not isinstance(left, bool):
                raise self.error(TypeError_, f"'{expr.op}' expects true or false, got {show(left)}", expr.left.span)
            if (expr.op == "and") != left:  # short-circuit
                return left
            right = self.eval(expr.right, env)
            if not isinstance(right, bool):
                raise self.error(TypeError_, f"'{expr.op}' expects true or false, got {show(right)}", expr.right.span)
            return right
        left, right = self.eval(expr.left, env), self.eval(expr.right, env)
        if expr.op in _COMPARE:
            if expr.op in ("==", "!="):
                return _COMPARE[expr.op](left, right)
            comparable = (is_number(left) and is_number(right)) or (
                type(left) is type(right) and isinstance(left, (str, tuple)))
            try:
                if comparable:
                    return _COMPARE[expr.op](left, right)
            except TypeError:  # lists holding values that do not order
                pass
            raise self.error(TypeError_, f"cannot compare {type_name(left)} {show(left)} with "
                             f"{type_name(right)} {show(right)}", expr.span)
        return self.arithmetic(expr, left, right)

    def arithmetic(self, expr: ast.Binary, left, right):
        op = expr.op
        ok = is_number(left) and is_number(right)
        if op == "+" and type(left) is type(right) and isinstance(left, (tuple, str)):
            ok = len(left) + len(right) <= self.limits.sequence
        if op == "*" and isinstance(left, tuple) and isinstance(right, int) and not isinstance(right, bool):
            ok = 0 <= len(left) * right <= self.limits.sequence
        if not ok:
            raise self.error(TypeError_, f"operator '{op}' cannot combine {type_name(left)} {show(left)} and "
                             f"{type_name(right)} {show(right)}", expr.span)
        if op in ("/", "//", "%") and right == 0:
            raise self.error(TypeError_, "division by zero", expr.right.span)
        if op == "**" and is_number(left) and abs(left) > 1 and (
                not is_number(right) or right * math.log2(abs(left)) > self.limits.int_bits):
            raise self.error(ParameterError, f"{show(left)} ** {show(right)} is too large", expr.span)
        try:
            result = _ARITHMETIC[op](left, right)
        except (OverflowError, ZeroDivisionError, ValueError) as error:
            raise self.error(TypeError_, f"arithmetic error: {error}", expr.span) from None
        if isinstance(result, int) and result.bit_length() > self.limits.int_bits:
            raise self.error(ParameterError, f"integer too large ({result.bit_length()} bits)", expr.span)
        if isinstance(result, complex):
            raise self.error(TypeError_, "result is not a real number", expr.span)
        if isinstance(result, float) and not math.isfinite(result):
            raise self.error(TypeError_, "number out of range", expr.span)
        return result

    def eval_Cond(self, expr: ast.Cond, env: Env):
        test = self.eval(expr.test, env)
        if not isinstance(test, bool):
            raise self.error(TypeError_, f"'if' expects a condition, got {type_name(test)} {show(test)}",
                             expr.test.span)
        return self.eval(expr.then if test else expr.orelse, env)

    def eval_CallExpr(self, expr: ast.CallExpr, env: Env):
        func = self.eval(expr.func, env)
        if not isinstance(func, Builtin):
            hint = ("blocks and layers are used as statements, e.g. 'name: block(...)'"
                    if isinstance(func, (BlockRef, OpRef)) else None)
            raise self.error(TypeError_, f"{show(func)} is not a function", expr.func.span, hint)
        args, kwargs = [], {}
        for arg in expr.args:
            value = self.eval(arg.value, env)
            if arg.name is None:
                args.append(value)
            else:
                kwargs[arg.name] = value
        try:
            result = func.fn(*args, **kwargs)
        except ValueProblem as problem:
            raise self.error(TypeError_, str(problem), expr.span, func.signature) from None
        except TypeError:
            raise self.error(TypeError_, f"wrong arguments for {func.name}", expr.span, func.signature) from None
        except (OverflowError, ValueError) as error:
            raise self.error(TypeError_, f"{func.name}: {error}", expr.span) from None
        if isinstance(result, float) and not math.isfinite(result):
            raise self.error(TypeError_, f"{func.name}: number out of range", expr.span)
        return result


def check_program(program: Program, network: str | None = None, overrides: dict | None = None,
                  limits: Limits = Limits(), input_shape: Shape | None = None) -> Network:
    """Checks a network; with `input_shape`, at that size instead of its declared one (see the NOTE below)."""
    decl = program.network(network)
    overrides = overrides or {}
    try:
        at_declared = Checker(program, limits)
        try:
            declared = at_declared.network(decl, overrides)
        except NetDSLError as error:
            if not at_declared.symbolic:
                raise
            if input_shape is None:
                note = f"the input size is symbolic, so it was checked at {SYMBOLIC_PROBE} x {SYMBOLIC_PROBE}; " \
                       "choose another with --input"
                error.hint = f"{error.hint}\n  note: {note}" if error.hint else note
                raise
            declared = None  # it failed at the probe size; what counts is `input_shape`
        if input_shape is None or (declared is not None and tuple(input_shape) == declared.input_shape):
            return declared
        again = Checker(program, limits)
        if at_declared.symbolic:  # no size of its own: checked at the one given, nothing to compare
            return again.network(decl, overrides, tuple(input_shape))
        again.replay = list(at_declared.shortcuts)
        resized = again.network(decl, overrides, tuple(input_shape))
        same_weights(declared, resized)
        return resized
    except RecursionError:
        raise ParameterError("the network is nested too deeply to check", decl.span,
                             "flatten deeply nested groups or expressions") from None


# NOTE: [Checking at another input size]
# `--input` asks whether *this* network accepts another size: the layers keep the weights they
# have at the declared input. So the network is checked at the declared size and at the new
# one, and every layer with parameters must get the input its weights were made for -- a fixed
# `linear` after `flatten` pins the spatial size (AlexNet's 227), the first convolution pins the
# channels -- and no other such layer may appear. A residual's generated shortcut keeps what it
# was at the declared size (identity, or a projection's stride) rather than being fitted anew.
# Parameter-free layers may adapt (a block reading `in.height` may pad differently).
# A symbolic input (`input [3, H, W]`) declares no size: it is checked once, at the given one.

def same_weights(declared: Network, resized: Network) -> None:
    """Raises unless every layer with parameters gets, in `resized`, the input its weights in `declared` take."""
    weights = {path: layer for path, layer in declared.layers() if layer.params}
    for path, layer in resized.layers():
        before = weights.get(path)
        if before is None and layer.params:
            raise note_resized(ShapeError(f"{path}: this {layer.op} has parameters at input "
                                          f"{shape_str(resized.input_shape)} but does not exist at the declared size",
                                          layer.span, None, layer.trace), resized.input_shape, declared.input_shape)
        if before is None or not layer.params:
            continue
        if layer.params != before.params:  # the same layer with another count: its input does not fit
            flat = len(layer.in_shape) == 1
            error = ShapeError(
                f"{path}: {layer.op} has weights for {before.in_shape[0]} input {'features' if flat else 'channels'}, "
                f"but at input {shape_str(resized.input_shape)} it receives {shape_str(layer.in_shape)}",
                layer.span, "insert adaptive_avgpool(...) before 'flatten' to accept other sizes" if flat
                else "the input channels are fixed by the weights", layer.trace)
            raise note_resized(error, resized.input_shape, declared.input_shape)


def note_resized(error: NetDSLError, given: Shape, declared: Shape) -> NetDSLError:
    """Adds to an error found at `--input` that the network was checked at another size than declared."""
    note = f"checked at input {shape_str(given)} instead of the declared {shape_str(declared)}"
    error.hint = f"{error.hint}\n  note: {note}" if error.hint else note
    return error
