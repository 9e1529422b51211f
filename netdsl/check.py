"""Stage 3 — check: `Program` + network name + overrides → annotated `graph.Network`.

Finds the network (following variants to their base), binds its parameters (defaults, variant
arguments, command-line overrides), reads its `input [...]` and elaborates its body
(`elaborate.py`; expressions in `evaluate.py`, ops in `layers.py`, combinators in
`combinators.py`). Pure: it never imports torch and nothing mutates its result afterwards.
Checking at another input size than the declared one is `sizes.check_at`.
"""

from __future__ import annotations

from . import ast
from .elaborate import Elaborator, Flow, Scope
from .errors import NameError_, NetDSLError, ParameterError, ShapeError, TypeError_, did_you_mean
from .evaluate import Env
from .graph import Network, Shape
from .layers import REGISTRY
from .limits import Limits
from .resolve import Program
from .scopes import check_names
from .text import shape_text
from .values import BUILTINS, show

SYMBOLIC_PROBE = 224  # where `input [3, H, W]` is checked without --input: the ImageNet size

__all__ = ["Checker", "Limits", "SYMBOLIC_PROBE", "check_program"]


class Checker(Elaborator):
    """Checks one network; `input_shape` in `network()` checks it at that size (same rank)."""

    def __init__(self, program: Program, limits: Limits = Limits(), replay: list | None = None,
                 memo: dict | None = None):
        super().__init__(program, limits, replay, memo)
        self.declared_input: Shape | None = None  # set when checking at another size than declared
        self.symbolic = False  # the input statement names its sizes (`input [3, H, W]`)

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
        self.run(decl.body[position + 1:], env, scope, flow)
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
            raise self.error(ShapeError, f"input size {shape_text(given)} has {len(given)} "
                             f"dimension{'s' if len(given) > 1 else ''}, but the network declares "
                             f"{shape_text(dims)}", stmt.span,
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




def check_program(program: Program, network: str | None = None, overrides: dict | None = None,
                  limits: Limits = Limits(), memo: dict | None = None, names_checked: bool = False) -> Network:
    """Checks a network at its declared input size (a symbolic one at SYMBOLIC_PROBE). `memo`, kept
    between checks of one program (a sweep), lets each reuse the block instances of those before;
    `names_checked` says its names were resolved already (`scopes.check_names`, once per sweep)."""
    decl = program.network(network)
    if not names_checked:
        check_names(program)
    checker = Checker(program, limits, memo=memo)
    try:
        return checker.network(decl, overrides or {})
    except NetDSLError as error:
        if checker.symbolic:
            note = f"the input size is symbolic, so it was checked at {SYMBOLIC_PROBE} x {SYMBOLIC_PROBE}; " \
                   "choose another with --input"
            error.hint = f"{error.hint}\n  note: {note}" if error.hint else note
        raise
    except RecursionError:
        raise nested_too_deeply(decl) from None


def nested_too_deeply(decl: ast.Decl) -> ParameterError:
    return ParameterError("the network is nested too deeply to check", decl.span,
                          "flatten deeply nested groups or expressions")
