"""Static name resolution: `Program` → the located errors of names that can never resolve.

Before anything is evaluated, every declaration of the main file is read once with lexical
scopes in hand (parameters, `let`s of the enclosing bodies, loop and comprehension variables,
named tensors, declarations, layers, functions), and every branch is read, taken or not: an
undefined name, an unknown layer or block, or an unknown keyword argument of a layer or block
is an error wherever it stands. All of them are reported at once (up to MAX_ERRORS), each with
the message and location evaluation would give it. Pure: nothing is evaluated.
"""

from __future__ import annotations

from . import ast
from .errors import NameError_, NetDSLError, did_you_mean
from .layers import PLUGIN_ERRORS, REGISTRY
from .resolve import Program
from .text import plural
from .values import BUILTINS

MAX_ERRORS = 20


def unresolved(program: Program) -> list[NetDSLError]:
    """The errors of the main file's declarations, in source order."""
    resolver = _Resolver(program)
    for decl in program.own:
        resolver.decl(decl)
    return sorted(resolver.errors, key=lambda e: (e.span.line, e.span.column))[:MAX_ERRORS]


def check_names(program: Program) -> None:
    """Raises the first unresolved name's error, carrying the others (`NetDSLError.also`)."""
    errors = unresolved(program)
    if errors:
        first, *others = errors
        first.also = tuple(others)
        raise first


def unknown_layer(name: str, span, candidates: set[str]) -> NameError_:
    """The error for a call of a name that is no layer or block: a close name if there is one, and the
    op plugins that failed to load (the op may be one of theirs: `layers.load_plugins`)."""
    hint = did_you_mean(name, candidates) or "define it with 'block', import it, or see 'netdsl layers'"
    if PLUGIN_ERRORS:
        hint += f"; {plural(len(PLUGIN_ERRORS), 'op plugin')} failed to load: {'; '.join(PLUGIN_ERRORS)}"
    return NameError_(f"unknown layer or block '{name}'", span, hint)


class _Resolver:
    def __init__(self, program: Program):
        self.program = program
        self.errors: list[NetDSLError] = []
        self.blocks = {name: decl for name, decl in program.decls.items() if isinstance(decl, ast.BlockDef)}

    def fail(self, message: str, span, hint: str | None) -> None:
        if len(self.errors) < MAX_ERRORS * 4:  # a runaway file: enough to show
            self.errors.append(NameError_(message, span, hint))

    # ---- declarations -----------------------------------------------------------------------
    def decl(self, decl: ast.Decl) -> None:
        if isinstance(decl, ast.VariantDef):
            for arg in decl.args:
                self.expr(arg.value, set())
            return
        scope: set[str] = set()
        for param in decl.params:
            if param.default is not None:
                self.expr(param.default, scope)
            scope.add(param.name)
        if isinstance(decl, ast.FunctionDef):
            self.expr(decl.body, scope)
            return
        scope |= {node.name for node in ast.walk(decl) if isinstance(node, ast.Tap)}  # wires: module-wide
        self.body(decl.body, scope)

    def body(self, stmts: list[ast.Stmt], outer: set[str]) -> None:
        scope = set(outer)  # each body is a scope of its own; a `let` holds for the statements after it
        for stmt in stmts:
            self.stmt(stmt, scope)

    def stmt(self, stmt: ast.Stmt, scope: set[str]) -> None:
        if isinstance(stmt, ast.Let):
            self.expr(stmt.value, scope)
            scope.add(stmt.name)
        elif isinstance(stmt, ast.Assert):
            self.expr(stmt.test, scope)
            for part in stmt.parts or ():
                if not isinstance(part, str):
                    self.expr(part, scope)
        elif isinstance(stmt, ast.For):
            self.expr(stmt.iterable, scope)
            self.body(stmt.body, scope | set(stmt.targets))
        elif isinstance(stmt, ast.If):
            for test, body in stmt.branches:
                self.expr(test, scope)
                self.body(body, scope)
            if stmt.orelse is not None:
                self.body(stmt.orelse, scope)
        elif isinstance(stmt, ast.InputStmt):  # a name bound nowhere is a symbolic size
            for item in stmt.dims.items:
                if not isinstance(item, ast.Name):
                    self.expr(item, scope)
        elif isinstance(stmt, ast.Chain):
            for layer in stmt.stmts:
                self.stmt(layer, scope)
        elif isinstance(stmt, ast.LayerStmt):
            if stmt.label is not None:
                for part in stmt.label.parts:
                    if not isinstance(part, str):
                        self.expr(part, scope)
            self.unit(stmt.unit, scope)
            if stmt.repeat is not None:
                self.expr(stmt.repeat, scope)

    def unit(self, unit: ast.Unit, scope: set[str]) -> None:
        if isinstance(unit, ast.Call):
            self.call(unit, scope)
        elif isinstance(unit, (ast.Group, ast.Combinator)):
            self.body(unit.body, scope)
            if isinstance(unit, ast.Combinator) and unit.shortcut is not None:
                self.body([unit.shortcut], scope)

    def call(self, call: ast.Call, scope: set[str]) -> None:
        for arg in call.args:
            self.expr(arg.value, scope)
        name = call.name
        if name in scope:  # a parameter or `let` holding a block or layer: known when evaluated
            return
        if name in self.blocks:
            params = [p.name for p in self.blocks[name].params]
            self.keywords(call, params, {}, f"block '{name}'", f"its parameters are: {', '.join(params) or 'none'}")
        elif name in REGISTRY:
            op = REGISTRY[name]
            params = [p.name for p in op.params]
            self.keywords(call, params, op.aliases(), name,
                          f"{name} takes: {', '.join(params)}" if params else f"{name} takes no arguments")
        elif name not in self.program.decls:
            error = unknown_layer(name, call.name_span, set(REGISTRY) | set(self.blocks))
            self.fail(error.message, error.span, error.hint)

    def keywords(self, call: ast.Call, names: list[str], aliases: dict, what: str, hint: str) -> None:
        for arg in call.args:
            if arg.name is not None and aliases.get(arg.name, arg.name) not in names:
                self.fail(f"{what} has no parameter '{arg.name}'", arg.span,
                          did_you_mean(arg.name, names + list(aliases)) or hint)

    # ---- expressions ------------------------------------------------------------------------
    def expr(self, expr: ast.Expr, scope: set[str]) -> None:
        stack: list[tuple[ast.Node, set[str]]] = [(expr, scope)]
        while stack:
            node, names = stack.pop()
            if isinstance(node, ast.Name):
                if not (node.name in names or node.name in self.program.decls or node.name in REGISTRY
                        or node.name in BUILTINS):
                    self.fail(f"undefined name '{node.name}'", node.span, did_you_mean(node.name, names | set(BUILTINS)))
            elif isinstance(node, ast.Comprehension):
                stack.append((node.iterable, names))
                inner = names | set(node.targets)
                stack.extend((part, inner) for part in (node.element, node.key, node.condition) if part is not None)
            else:
                stack.extend((child, names) for child in ast.children(node))

