"""Elaboration: a block or network body (`ast` statements) and the incoming shape → graph nodes.

Runs statements in order with the current tensor's shape in hand: `let`, `assert`, loops and
conditionals, layer calls (arguments bound by the op's `LayerDef.bind`), block instantiation
with its tensor arguments, groups and repetitions, named tensors, and combinators (arms built
as `COMBINATORS[keyword]` says and joined by its shape rule). Each module's children are named
by `Scope`; every node gets its shapes, parameters and MACs. `check.py` drives it per network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .combinators import COMBINATORS, CombinatorDef, projection_stride
from .errors import Frame, NameError_, ParameterError, ShapeError, Span, TypeError_, did_you_mean, span_text
from .evaluate import Env, Evaluator
from .graph import From, Layer, Merge, Module, Shape, Tap, Wire
from .layers import CANONICAL_AXES, REGISTRY, LayerDef, LayerProblem, axes_text, rule_shape
from .names import check_label, unlabelled
from .parse import reserved
from .scopes import unknown_layer
from .text import shape_text
from .values import BlockRef, FunctionRef, OpRef, article, described, show, type_name

PROBLEM_ERRORS = {"shape": ShapeError, "param": ParameterError, "type": TypeError_}  # LayerProblem.kind → error


@dataclass
class Scope:
    """The namespace of one module under construction: its children's names."""

    path: str  # dotted module path, for messages
    names: dict[str, Span] = field(default_factory=dict)
    stateless: dict[str, tuple] = field(default_factory=dict)  # reusable name -> (op, args)
    wires: dict[str, Wire] = field(default_factory=dict)  # tensors named in this module's forward

    def claim(self, label: str | None, span: Span, reuse_key: tuple | None = None) -> tuple[str, bool]:
        """The child's name, and whether it reuses an existing parameter-free module."""
        name = label if label is not None else unlabelled(len(self.names))
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


def _shrink_hint(nodes: list) -> str | None:
    """The fix for a residual body that changes its input's size without striding: the padding of
    the first layer that trims or grows the border (`conv(16, 3)` at stride 1 → `pad=1`), when one can."""
    for node in nodes:
        if node.walk_kind == "module":
            found = _shrink_hint(node.body)
        elif node.walk_kind == "merge":
            found = next(filter(None, (_shrink_hint(arm) for arm in node.arms)), None)
        elif node.walk_kind == "layer" and REGISTRY[node.op].param("pad") is not None:
            reach = REGISTRY[node.op].reach(node.in_shape, node.args)
            if not isinstance(reach, tuple) or len(node.out_shape) != 3 or node.out_shape[1:] == node.in_shape[1:]:
                continue
            if any(w.stride != 1 or (w.kernel - 1) * w.dilation % 2 for w in reach):
                return None  # striding, or an even window: no padding keeps the size
            pads = [(w.kernel - 1) * w.dilation // 2 for w in reach]
            pad = pads[0] if pads[0] == pads[1] else pads
            return (f"its {node.op} at {Path(node.span.file).name}:{node.span.line} turns {shape_text(node.in_shape)} "
                    f"into {shape_text(node.out_shape)}: give it pad={pad} to keep the size")
        else:
            continue
        if found:
            return found
    return None


@dataclass
class Flow:
    """A dataflow chain under construction: its nodes and the current shape."""

    shape: Shape
    nodes: list = field(default_factory=list)
    axes: tuple[str, ...] | None = None  # the current tensor's axes where not canonical (NOTE [Axes])
    permuted_at: Span | None = None  # the layer that made them so


@dataclass
class Branches:
    """Inside a branches-combinator (`inception`, `add`, ...): every layer statement starts a new
    chain, from `starts[i]` (the combinator's `arm_input`), else from the input."""

    in_shape: Shape
    flows: list[Flow] = field(default_factory=list)
    starts: list[Shape] | None = None

    def start(self) -> Shape:
        return self.starts[len(self.flows)] if self.starts else self.in_shape




# NOTE: [Elaboration memo]
# A block instance's module is a function of the block, its bound parameters, the input's shape,
# the nesting depth and the limits: a block sees nothing of its caller but what it is passed (its
# scope starts at the file's declarations, `in` is its input). So the first instance for a key is
# built by running the body, and every later one is a copy of its nodes with the call's name, span
# and trace -- ResNet-152's 36 identical units of layer3 are built twice (the first unit and one
# more), not 36 times. A copy, not the same objects: later stages key their tables by node
# (`id(node)` in cost.py, draw.py, inplace.py), and a node's trace names its own module path.
# What building it did to the elaborator is replayed: its steps and layers count towards the limits
# (an instance that would pass one is built afresh, so that it fails where it always did), its
# generated shortcuts are recorded for `replay`, its first read of an input size is kept.
# Not remembered: an instance with a tensor argument or a `tap` (its wires are the caller's or
# numbered per network), and any instance while `replay` still holds shortcuts to use. A memo
# kept between checks of one program (`api.checker`, a sweep) reuses the instances of earlier
# variants. tests/test_check.py checks every shipped network with and without the memo: the
# same graph, field for field.


class Elaborator(Evaluator):
    """Turns statements into graph nodes; `check.Checker` adds the network around them."""

    def __init__(self, program, limits, replay: list | None = None, memo: dict | None = None):
        super().__init__(program, limits)
        self.layer_count = 0
        self.globals = Env()
        self.label_span: Span | None = None  # the label of the layer statement being evaluated
        self.wire_count = 0
        self.root_flow: Flow | None = None  # the network's own chain: where root-only combinators may go
        self.shortcuts: list = []  # each generated residual shortcut, in order: "identity" or a stride
        self.replay: list = list(replay or [])  # the same, from the declared size, when checking at another
        self.memo: dict = {} if memo is None else memo  # block instances built so far (NOTE [Elaboration memo])

    def module(self, name: str, kind: str, type_name_: str, flow: Flow, in_shape: Shape, span: Span) -> Module:
        self.canonical(flow, span, "leave a chain")
        module = Module(name=name, kind=kind, type_name=type_name_, body=flow.nodes,
                        in_shape=in_shape, out_shape=flow.shape, span=span, trace=self.trace)
        for child in module.children():
            module.params += child.params
            module.macs += child.macs
        return module

    # ---- statements ------------------------------------------------------------------------
    def run(self, stmts: list[ast.Stmt], env: Env, scope: Scope, flow: Flow | None,
            branches: Branches | None = None) -> None:
        for stmt in stmts:
            self.statement(stmt, env, scope, flow, branches)

    def statement(self, stmt: ast.Stmt, env: Env, scope: Scope, flow: Flow | None,
                  branches: Branches | None = None) -> None:
        self.tick(stmt.span)
        outer, self.scope = self.scope, scope  # expressions may name the scope's tensors
        try:
            getattr(self, f"stmt_{type(stmt).__name__}")(stmt, env, scope, flow, branches)
        finally:
            self.scope = outer


    def stmt_Tap(self, stmt: ast.Tap, env: Env, scope: Scope, flow: Flow | None, branches) -> None:
        if flow is None:
            raise self.error(ShapeError, f"'tap {stmt.name}' cannot stand alone as a branch", stmt.span,
                             "tap before the inception/add, or inside a chain's block")
        if (error := reserved(stmt.name, stmt.span)) is not None:
            raise self.error(NameError_, error.message, stmt.span, error.hint)
        self.canonical(flow, stmt.span, "be named")
        self.wire_count += 1
        wire = Wire(stmt.name, flow.shape, self.wire_count)
        scope.wires[stmt.name] = wire
        flow.nodes.append(Tap(wire=wire, in_shape=flow.shape, out_shape=flow.shape, span=stmt.span))

    def stmt_Let(self, stmt: ast.Let, env: Env, scope: Scope, flow: Flow | None, branches) -> None:
        env.define(stmt.name, self.eval(stmt.value, env), stmt.span)

    def stmt_Assert(self, stmt: ast.Assert, env: Env, scope: Scope, flow: Flow | None, branches) -> None:
        test = self.eval(stmt.test, env)
        if not isinstance(test, bool):
            raise self.error(TypeError_, f"assert expects a condition, got {described(test)}",
                             stmt.test.span)
        if not test:
            failed = span_text(stmt.test.span) or "condition"
            message = "".join(part if isinstance(part, str) else self.message_part(part, env)
                              for part in stmt.parts) if stmt.parts is not None else None
            raise self.error(ParameterError, message or f"assertion failed: {failed}", stmt.span)

    def message_part(self, part: ast.Expr, env: Env) -> str:
        value = self.eval(part, env)
        return value if isinstance(value, str) else show(value)

    def stmt_For(self, stmt: ast.For, env: Env, scope: Scope, flow: Flow | None, branches) -> None:
        for item in self.items(stmt.iterable, env, "for"):
            self.tick(stmt.span)
            inner = Env(env)
            self.bind_targets(stmt.targets, item, inner, stmt.span)
            self.run(stmt.body, inner, scope, flow, branches)

    def stmt_If(self, stmt: ast.If, env: Env, scope: Scope, flow: Flow | None, branches) -> None:
        for test_expr, body in stmt.branches:
            test = self.eval(test_expr, env)
            if not isinstance(test, bool):
                raise self.error(TypeError_, f"if expects a condition, got {described(test)}",
                                 test_expr.span)
            if test:
                self.run(body, Env(env), scope, flow, branches)
                return
        if stmt.orelse is not None:
            self.run(stmt.orelse, Env(env), scope, flow, branches)

    def stmt_InputStmt(self, stmt: ast.InputStmt, env: Env, scope: Scope, flow: Flow | None, branches) -> None:
        raise self.error(ShapeError, "'input' belongs at the start of a network", stmt.span,
                         "blocks receive their input from the caller; read its shape with in.channels")

    def stmt_LayerStmt(self, stmt: ast.LayerStmt | ast.Chain, env: Env, scope: Scope, flow: Flow | None, branches) -> None:
        if branches is not None:  # inside a branches-combinator: every layer statement or chain is a branch
            flow = Flow(branches.start())
            branches.flows.append(flow)
        for layer_stmt in stmt.stmts if isinstance(stmt, ast.Chain) else [stmt]:
            self.layer_statement(layer_stmt, env, scope, flow)

    stmt_Chain = stmt_LayerStmt

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
        self.canonical(flow, stmt.span, "enter a repetition")
        name, _ = scope.claim(label, self.label_span or stmt.span)
        inner_scope, inner = Scope(scope.child_path(name)), Flow(flow.shape)
        for _ in range(count):
            self.tick(stmt.span)
            self.unit(stmt.unit, None, env, inner_scope, inner)
        self.append(flow, self.module(name, "sequential", "repeat", inner, flow.shape, stmt.span))

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
        getattr(self, f"unit_{type(unit).__name__}")(unit, label, label_span, env, scope, flow)

    def unit_Call(self, unit: ast.Call, label, label_span, env: Env, scope: Scope, flow: Flow) -> None:
        self.call(unit, label, env, scope, flow, label_span)

    def unit_Group(self, unit: ast.Group, label, label_span, env: Env, scope: Scope, flow: Flow) -> None:
        self.canonical(flow, unit.span, "enter a group")
        name, _ = scope.claim(label, label_span or unit.span)
        inner = Flow(flow.shape)
        self.run(unit.body, Env(env), Scope(scope.child_path(name)), inner)
        self.append(flow, self.module(name, "sequential", "group", inner, flow.shape, unit.span))

    def unit_From(self, unit: ast.From, label, label_span, env: Env, scope: Scope, flow: Flow) -> None:
        if label is not None:
            raise self.error(TypeError_, "'from' selects a tensor and takes no label", label_span or unit.span)
        wire = self.wire(unit.name, scope, unit.span)
        self.canonical(flow, unit.span, "be left for another tensor")
        channels, out_shape = None, wire.shape
        if unit.sliced:
            channels = self.channel_slice(unit, wire, env)
            out_shape = (channels[1] - channels[0], *wire.shape[1:])
        flow.nodes.append(From(wire=wire, in_shape=flow.shape, out_shape=out_shape, span=unit.span, channels=channels))
        flow.shape = out_shape

    def channel_slice(self, unit: ast.From, wire: Wire, env: Env) -> tuple[int, int]:
        """The checked (start, stop) of `from name[start:stop]`: channels of a [C, H, W] tensor."""
        if len(wire.shape) != 3:
            raise self.error(ShapeError, f"'{unit.name}[...]' slices channels, but '{unit.name}' is "
                             f"{shape_text(wire.shape)}, not [channels, height, width]", unit.span)
        channels = wire.shape[0]
        bounds = []
        for expr, default in ((unit.start, 0), (unit.stop, channels)):
            value = default if expr is None else self.eval(expr, env)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(TypeError_, f"a channel slice takes integers, got {show(value)}",
                                 expr.span if expr is not None else unit.span, "write c // 2, not c / 2")
            bounds.append(value)
        start, stop = bounds
        if not 0 <= start < stop <= channels:
            raise self.error(ShapeError, f"channel slice [{start}:{stop}] of '{unit.name}' {shape_text(wire.shape)} "
                             f"must satisfy 0 <= start < stop <= {channels}", unit.span,
                             f"'{unit.name}' has channels 0 to {channels - 1}")
        return start, stop

    def unit_Combinator(self, unit: ast.Combinator, label, label_span, env: Env, scope: Scope, flow: Flow) -> None:
        entry = COMBINATORS[unit.keyword]
        self.canonical(flow, unit.span, f"enter '{unit.keyword}'")
        if unit.shortcut is not None and not entry.shortcut:
            raise self.error(TypeError_, f"'{unit.keyword}' takes no shortcut", unit.shortcut.span,
                             "only " + " and ".join(f"'{c.keyword}'" for c in COMBINATORS.values() if c.shortcut)
                             + " take one")
        if entry.root_only and flow is not self.root_flow:
            raise self.error(ShapeError, f"{entry.label}s belong in the network's own body", unit.span,
                             f"move '{unit.keyword} {{ ... }}' out of blocks, groups and combinators")
        if entry.body == "module":  # the body is a named module of its own: the merge's one arm
            name, _ = scope.claim(label, label_span or unit.span)
            inner = Flow(flow.shape)
            self.run(unit.body, Env(env), Scope(scope.child_path(name)), inner)
            self.join(entry, unit, [Flow(inner.shape, [self.module(name, "sequential", entry.type_name, inner,
                                                                    flow.shape, unit.span)])], flow)
        elif label is None:  # transparent: its layers belong to the enclosing module
            self.merge(entry, unit, env, scope, flow)
        else:
            name, _ = scope.claim(label, label_span or unit.span)
            inner = Flow(flow.shape)
            self.merge(entry, unit, env, Scope(scope.child_path(name)), inner)
            self.append(flow, self.module(name, "block", entry.type_name, inner, flow.shape, unit.span))

    def merge(self, entry: CombinatorDef, unit: ast.Combinator, env: Env, scope: Scope, flow: Flow) -> None:
        """Builds the combinator's arms from the merge's input and joins them."""
        in_shape = flow.shape
        if entry.body == "branches":  # every layer statement or chain of the body is an arm
            collected = Branches(in_shape, starts=self.arm_inputs(entry, unit, in_shape))
            self.run(unit.body, Env(env), scope, None, collected)
            if not collected.flows:
                raise self.error(ShapeError, f"{unit.keyword} needs at least one branch", unit.span)
            arms = collected.flows
        else:
            body = Flow(in_shape)
            self.run(unit.body, Env(env), scope, body)
            arms = [body]
        for arm in arms:  # before a projection is fitted to an arm's shape
            self.canonical(arm, unit.span, f"end a branch of '{unit.keyword}'")
        if entry.input_arm is not None:
            arms.insert(entry.input_arm, Flow(in_shape))
        if unit.shortcut is not None:
            side = Flow(in_shape)
            self.layer_statement(unit.shortcut, Env(env), scope, side, default_label="downsample")
            arms.append(side)
        elif entry.project:
            projection, shape = self.generated_shortcut(in_shape, arms[0], scope, unit.span)
            arms.append(Flow(shape, [projection] if projection is not None else []))
        elif entry.shortcut:
            arms.append(Flow(in_shape))
        self.join(entry, unit, arms, flow)

    def arm_inputs(self, entry: CombinatorDef, unit: ast.Combinator, in_shape: Shape) -> list[Shape] | None:
        """What each arm of a combinator with its own `arm_input` starts from (its arms must then be
        written out, one statement each, so that their number is known before they are checked)."""
        if entry.arm_input is None:
            return None
        statements = [stmt for stmt in unit.body if isinstance(stmt, (ast.LayerStmt, ast.Chain))]
        if any(isinstance(stmt, (ast.For, ast.If)) for stmt in unit.body):
            raise self.error(ShapeError, f"the branches of '{unit.keyword}' must be written out one by one", unit.span,
                             "write each branch as its own statement; a loop or 'if' cannot make them here")
        if not statements:
            raise self.error(ShapeError, f"{unit.keyword} needs at least one branch", unit.span)
        try:
            return [entry.arm_input(in_shape, index, len(statements)) for index in range(len(statements))]
        except LayerProblem as problem:
            raise self.error(PROBLEM_ERRORS[problem.kind], problem.message, unit.span, problem.hint) from None

    def join(self, entry: CombinatorDef, unit: ast.Combinator, arms: list[Flow], flow: Flow) -> None:
        for arm in arms:
            self.canonical(arm, unit.span, f"end a branch of '{unit.keyword}'")
        try:
            out_shape = entry.shape(flow.shape, [arm.shape for arm in arms])
        except LayerProblem as problem:
            raise self.error(PROBLEM_ERRORS[problem.kind], problem.message, unit.span, problem.hint) from None
        self.check_size(out_shape, unit.span)
        self.append(flow, Merge(unit.keyword, [arm.nodes for arm in arms], flow.shape, out_shape, unit.span))

    def wire(self, name: str, scope: Scope, span: Span) -> Wire:
        wire = scope.wires.get(name)
        if wire is None:
            raise self.error(NameError_, f"no tensor named '{name}' in module '{scope.path or '<root>'}'", span,
                             did_you_mean(name, scope.wires) or "name the current tensor with 'tap NAME' first; "
                             "a block sees another module's tensors only when they are passed as arguments")
        return wire

    def generated_shortcut(self, in_shape: Shape, body: Flow, scope: Scope,
                           span: Span) -> tuple[Module | None, Shape]:
        """A residual without `shortcut`: the identity, or a projection when the body changes the shape.
        Checked at another input size, it keeps what it had at the declared size (`replay`)."""
        kept = self.replay.pop(0) if self.replay else None
        out_shape = body.shape
        if kept == "identity" or (kept is None and out_shape == in_shape):
            self.shortcuts.append("identity")
            return None, in_shape
        module = self.projection(in_shape, out_shape, scope, span, stride=kept, body=body.nodes)
        self.shortcuts.append(module.body[0].args["stride"])
        return module, module.out_shape

    def projection(self, in_shape: Shape, out_shape: Shape, scope: Scope, span: Span, stride=None,
                   body: list | None = None) -> Module:
        """torchvision's `downsample`: a strided 1×1 conv and batch norm matching the body's shape
        (with `stride` given, that stride, whatever shape it gives)."""
        explain = (f"residual add: the body changes the shape from {shape_text(in_shape)} to "
                   f"{shape_text(out_shape)} and no projection can match it")
        if len(in_shape) != 3 or len(out_shape) != 3:
            raise self.error(ShapeError, explain, span, "a residual body must keep [channels, height, width] form")
        if stride is None:
            stride = projection_stride(in_shape, out_shape)
            if stride is None:
                raise self.error(ShapeError, explain, span, _shrink_hint(body or []) or
                                 "the spatial size may only shrink by striding; give the shortcut explicitly")
        if "downsample" in scope.names:
            raise self.error(NameError_, f"module '{scope.path or '<root>'}' already has a 'downsample'; this "
                             "residual needs a generated projection of the same name", span,
                             "label the residual ('name: residual { ... }') so its projection gets its own module, "
                             "or give it an explicit 'shortcut name: { ... }'")
        name, _ = scope.claim("downsample", span)
        inner_scope, inner = Scope(scope.child_path(name)), Flow(in_shape)
        conv, bn = REGISTRY["conv"], REGISTRY["bn"]
        self.layer(conv, conv.bind(out=out_shape[0], kernel=1, stride=stride, bias=False), None, inner_scope, inner, span)
        self.layer(bn, bn.bind(), None, inner_scope, inner, span)
        return self.module(name, "sequential", "projection", inner, in_shape, span)

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
        if isinstance(decl, ast.FunctionDef):
            raise self.error(TypeError_, f"'{name}' is a function and cannot be used as a layer", span,
                             f"call it in an expression, e.g. conv({name}(...), 3)")
        if name in REGISTRY:
            return OpRef(name)
        candidates = set(REGISTRY) | {d.name for d in self.program.decls.values() if isinstance(d, ast.BlockDef)}
        candidates |= {n for n in env.names() if isinstance(env.lookup(n), (BlockRef, OpRef))}
        error = unknown_layer(name, span, candidates)
        raise self.error(NameError_, error.message, span, error.hint)

    def canonical(self, flow: Flow, span: Span, what: str) -> None:
        """Refuses a permuted tensor where it would leave its chain (NOTE [Axes] in netdsl/layers.py)."""
        if flow.axes is None:
            return
        where = flow.permuted_at
        raise self.error(ShapeError, f"a tensor with axes {axes_text(flow.axes)} (per sample {shape_text(flow.shape)}, "
                         f"from line {where.line}) cannot {what}", span,
                         "permute it back to [channels, height, width] first")

    def layer(self, op: LayerDef, args: dict, label: str | None, scope: Scope, flow: Flow, span: Span,
              arg_spans: dict | None = None, label_span: Span | None = None) -> None:
        in_shape, axes = flow.shape, flow.axes
        if axes is not None and op.layout == "canonical":
            raise self.error(ShapeError, f"{op.name} expects [channels, height, width] or [features], but this tensor's "
                             f"axes are {axes_text(axes)} (per sample {shape_text(in_shape)}, from line "
                             f"{flow.permuted_at.line})", span,
                             "permute it back first; element-wise ops, linear and layernorm take it as it is")
        view = rule_shape(op, in_shape, axes)  # a per-position op's rules see one position's features
        try:
            out_shape = op.shape(view, args)
        except LayerProblem as problem:
            cls = ParameterError if problem.kind == "param" else ShapeError
            where = (arg_spans or {}).get(problem.param, span)
            raise self.error(cls, problem.message, where, problem.hint) from None
        out_view, positions = out_shape, math.prod(in_shape[:-1]) if view is not in_shape else 1
        if view is not in_shape:
            out_shape = in_shape[:-1] + out_shape
        full = axes or CANONICAL_AXES.get(len(in_shape), ())
        out_axes = op.axes(full, args) if op.axes else axes
        if view is not in_shape and out_shape[-1] != in_shape[-1] and out_axes[-1] != "C":
            out_axes = out_axes[:-1] + ("F",)  # a per-position linear makes features of another axis
        if out_axes is not None and out_axes == CANONICAL_AXES.get(len(out_shape)):
            out_axes = None
        self.check_size(out_shape, span)
        self.layer_count += 1
        if self.layer_count > self.limits.layers:
            raise self.error(ParameterError, f"more than {self.limits.layers} layers", span)
        params = op.count(view, args)
        # the same constructor call: a parameter-free module that can serve every use (like torchvision's `relu`)
        reuse_key = (op.name, repr(op.torch(view, args))) if params == 0 and label else None
        name, shared = scope.claim(label, label_span or span, reuse_key)
        self.append(flow, Layer(
            name=name, op=op.name, args=args, in_shape=in_shape, out_shape=out_shape,
            params=params, macs=op.macs(view, out_view, args) * positions,
            span=span, trace=self.trace, shared=shared, labelled=label is not None, axes=axes,
            out_axes=out_axes,
        ))
        if out_axes is not None and axes is None:
            flow.permuted_at = span
        flow.axes = out_axes

    def check_size(self, shape: Shape, span: Span) -> None:
        if math.prod(shape) > self.limits.elements:
            raise self.error(ShapeError, f"tensor {shape_text(shape)} has {math.prod(shape)} elements per sample, "
                             f"more than the limit of {self.limits.elements}", span)

    def bind_op(self, op: LayerDef, call: ast.Call, env: Env) -> tuple[dict, dict]:
        names = op.param_names
        given = self.match_arguments(
            call.args, names, op.name, env,
            too_many=lambda: f"{op.name} takes at most {len(names)} positional arguments ({', '.join(names)}), "
                             f"got {len(call.args)}",
            hint=lambda: f"{op.name} takes: {', '.join(names)}" if names else f"{op.name} takes no arguments",
            aliases=op.aliases(),
        )
        spans = {key: span for key, (_, span) in given.items()}
        try:
            return op.bind({key: value for key, (value, _) in given.items()}), spans
        except LayerProblem as problem:
            raise self.error(PROBLEM_ERRORS[problem.kind], problem.message, spans.get(problem.param, call.span),
                             problem.hint) from None

    def instantiate(self, decl: ast.BlockDef, call: ast.Call, caller: Env, name: str, scope: Scope,
                    flow: Flow) -> None:
        if len(self.trace) >= self.limits.block_depth:
            raise self.error(ParameterError, f"blocks nested more than {self.limits.block_depth} deep "
                             f"(does '{decl.name}' call itself?)", call.span)
        self.canonical(flow, call.span, f"enter block '{decl.name}'")
        env = Env(self.globals, input_shape=flow.shape)
        params = [p.name for p in decl.params]
        given = self.match_arguments(
            call.args, params, f"block '{decl.name}'", caller,
            too_many=lambda: f"block '{decl.name}' takes {len(params)} arguments ({', '.join(params)}), "
                             f"got {len(call.args)}",
            hint=lambda: f"its parameters are: {', '.join(params) or 'none'}",
        )
        path = scope.child_path(name)
        outer_trace = self.trace
        self.trace = (*outer_trace, Frame(decl.name, decl.span, call.span, path))
        try:
            self.bind_parameters(decl, f"block '{decl.name}'", given, env, call.span)
            key = self.memo_key(decl, env, flow.shape)
            template = self.memo.get(key) if key is not None else None
            if template is not None and template.fits(self):
                module = template.instance(self, name, call.span, path)
            else:
                module = self.elaborate_block(decl, env, name, flow, call.span, key)
        finally:
            self.trace = outer_trace
        self.append(flow, module)

    def elaborate_block(self, decl: ast.BlockDef, env: Env, name: str, flow: Flow, span: Span, key) -> Module:
        """A block instance's module, built by running its body; remembered under `key` (when not
        None) if nothing in it depends on more than the key (NOTE [Elaboration memo])."""
        steps, layers, wires, shortcuts = self.steps, self.layer_count, self.wire_count, len(self.shortcuts)
        inner, block_scope = Flow(flow.shape), Scope(self.trace[-1].path)
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
        outer_read, self.reads_input_size = self.reads_input_size, None
        try:
            self.run(decl.body, Env(env), block_scope, inner)
        finally:
            read, self.reads_input_size = self.reads_input_size, outer_read or self.reads_input_size
        module = self.module(name, "block", decl.name, inner, flow.shape, span)
        module.inputs, module.parameters = tuple(inputs), tuple(parameters)
        if key is not None and self.wire_count == wires:
            module.template = object()  # copied into every instance made from it
            self.memo[key] = _Template(module, len(self.trace), self.steps - steps, self.layer_count - layers,
                                       tuple(self.shortcuts[shortcuts:]), read, self.label_span)
        return module

    def memo_key(self, decl: ast.BlockDef, env: Env, in_shape: Shape):
        """What a block instance's module depends on: the block, its bound parameters, the input's
        shape, the nesting depth and the limits. None where it depends on more: a tensor argument, or
        a residual kept from the declared size (`replay`)."""
        if self.replay:
            return None
        try:
            values = tuple(_frozen(env.values[param.name]) for param in decl.params)
        except _Unkeyable:
            return None
        return id(decl), values, in_shape, len(self.trace), self.limits


class _Unkeyable(Exception):
    """A value a memo key cannot hold (a tensor)."""


def _frozen(value):
    """`value` as part of a memo key: equal only for values no block can tell apart (1, 1.0 and True
    differ; so do 0.0 and -0.0)."""
    if isinstance(value, tuple):
        return tuple, tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return dict, tuple((_frozen(k), _frozen(v)) for k, v in value.items())
    if isinstance(value, (BlockRef, FunctionRef)):
        return type(value), id(value.decl)
    if isinstance(value, Wire):
        raise _Unkeyable
    if isinstance(value, float):
        return float, repr(value)
    return type(value), value


@dataclass
class _Template:
    """A block instance's module as first built, and what building it did to the elaborator."""

    module: Module
    depth: int  # frames in the trace while it was built, its own included
    steps: int  # the evaluation steps and layers building it counted (towards the limits)
    layers: int
    shortcuts: tuple  # the generated residual shortcuts inside it, in order
    read: Span | None  # its first read of an input size
    label_span: Span | None  # the elaborator's `label_span` after it

    def fits(self, elaborator: "Elaborator") -> bool:
        """Whether another instance stays within the limits on steps and layers (else it is built
        afresh, to fail where a fresh build fails)."""
        return (elaborator.steps + self.steps <= elaborator.limits.steps
                and elaborator.layer_count + self.layers <= elaborator.limits.layers)

    def instance(self, elaborator: "Elaborator", name: str, span: Span, path: str) -> Module:
        """The same module for another call: its nodes copied, with the call's name, span and trace."""
        elaborator.steps += self.steps
        elaborator.layer_count += self.layers
        elaborator.shortcuts.extend(self.shortcuts)
        if elaborator.reads_input_size is None:
            elaborator.reads_input_size = self.read
        elaborator.label_span = self.label_span
        here, old = elaborator.trace, self.module.trace[-1].path
        traces: dict[int, tuple] = {}

        def retrace(trace: tuple) -> tuple:
            new = traces.get(id(trace))
            if new is None:
                new = traces[id(trace)] = here + tuple(
                    Frame(frame.block, frame.definition, frame.call, path + frame.path[len(old):])
                    for frame in trace[self.depth:])
            return new

        def copied(node):
            new = object.__new__(type(node))  # `copy.copy` without its protocol: a tenth of the time
            new.__dict__.update(node.__dict__)
            kind = node.walk_kind
            if kind == "merge":
                new.arms = [[copied(n) for n in arm] for arm in node.arms]
                return new
            new.trace = retrace(node.trace)
            if kind == "module":
                new.body = [copied(n) for n in node.body]
            return new

        module = copied(self.module)
        module.name, module.span = name, span
        return module
