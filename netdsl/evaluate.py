"""Expression evaluation: an `ast.Expr` and the scope it is read in → a netdsl value (`values.py`).

`Env` is a lexical scope (`let` bindings, parameters, loop variables); `Evaluator` computes
expressions with the language's rules — numbers, strings, lists, dictionaries, `in` (the
incoming tensor's shape), built-in functions — and bounds what they may build (`Limits`).
The checker (`check.py`) is an `Evaluator` that also elaborates statements.
"""

from __future__ import annotations

import math
import operator
from typing import Callable

from . import ast
from .errors import Frame, NameError_, NetDSLError, ParameterError, Span, TypeError_, did_you_mean
from .layers import REGISTRY, Shape
from .limits import Limits
from .parse import reserved
from .resolve import Program
from .values import (
    BUILTINS, BlockRef, Builtin, FunctionRef, OpRef, TensorShape, ValueProblem, article, described, is_number, show,
    type_name,
    value_size,
)


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
        if (error := reserved(name, span)) is not None:
            raise error
        if name in self.values:
            raise NameError_(
                f"'{name}' is already defined in this scope (at line {self.spans[name].line})",
                span, hint="names are immutable; choose a new name",
            )
        self.values[name] = value
        self.spans[name] = span




_ARITHMETIC: dict[str, Callable] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
}
_COMPARE: dict[str, Callable] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}




class Evaluator:
    """Evaluates expressions; `scope` (a module under construction, with its named tensors) and
    `trace` (the block instantiations on the way) are the checker's, read for names and errors."""

    _eval_methods: dict = {}  # expression class -> method, per Evaluator class (`__init_subclass__`)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._eval_methods = {}

    def __init__(self, program: Program, limits: Limits = Limits()):
        self.program = program
        self.limits = limits
        self.trace: tuple[Frame, ...] = ()
        self.scope = None  # the checker's `Scope` whose statement is being evaluated
        self.reads_input_size: Span | None = None  # the first read of a tensor's size (in.height)
        self.steps = 0
        self.function_depth = 0

    def tick(self, span: Span) -> None:
        """One unit of work; a small file must not be able to make the checker run for ever."""
        self.steps += 1
        if self.steps > self.limits.steps:
            raise self.error(ParameterError, f"the network takes more than {self.limits.steps:,} evaluation steps "
                             "to build", span, "look for a loop or a recursive block that does not terminate soon")

    def bind_targets(self, targets: list[str], item, env: "Env", span: Span) -> None:
        """Binds a `for`'s names to one item (several names unpack a list of that length)."""
        if len(targets) == 1:
            env.define(targets[0], item, span)
            return
        if not isinstance(item, tuple) or len(item) != len(targets):
            raise self.error(TypeError_, f"cannot unpack {show(item)} into {len(targets)} names "
                             f"({', '.join(targets)})", span)
        for target, value in zip(targets, item):
            env.define(target, value, span)

    def items(self, iterable: ast.Expr, env: "Env", what: str) -> tuple:
        """The elements a `for` iterates over: a list's, or a dict's [key, value] pairs."""
        items = self.eval(iterable, env)
        if isinstance(items, dict):
            items = tuple(items.items())
        if not isinstance(items, tuple):
            raise self.error(TypeError_, f"{what} expects a list, got {described(items)}",
                             iterable.span, "use range(n) to count")
        return items

    def error(self, cls, message: str, span: Span | None, hint: str | None = None) -> NetDSLError:
        return cls(message, span, hint, tuple(self.trace))

    def bounded(self, value, span: Span):
        """`value`, unless it holds more elements than `limits.value` (shared lists counted each time
        they occur): such a value could not be compared, quoted or iterated in reasonable time."""
        if isinstance(value, (tuple, dict)) and value_size(value, self.limits.value) > self.limits.value:
            raise self.error(ParameterError, f"a value of more than {self.limits.value:,} elements", span,
                             "a list inside a list counts once for each time it occurs")
        return value

    def eval(self, expr: ast.Expr, env: Env):
        kind = type(expr)
        method = self._eval_methods.get(kind)
        if method is None:  # once per class and expression kind
            method = self._eval_methods[kind] = getattr(type(self), f"eval_{kind.__name__}")
        return method(self, expr, env)

    def eval_Literal(self, expr: ast.Literal, env: Env):
        if isinstance(expr.value, float) and not math.isfinite(expr.value):
            raise self.error(TypeError_, "number out of range", expr.span)
        return expr.value

    def eval_ListExpr(self, expr: ast.ListExpr, env: Env):
        return self.bounded(tuple(self.eval(item, env) for item in expr.items), expr.span)

    def eval_DictExpr(self, expr: ast.DictExpr, env: Env):
        result = {}
        for key_expr, value_expr in expr.items:
            key = self.eval(key_expr, env)
            if not isinstance(key, (int, str, bool, float)):
                raise self.error(TypeError_, f"dictionary keys must be numbers or strings, got {show(key)}",
                                 key_expr.span)
            result[key] = self.eval(value_expr, env)
        return self.bounded(result, expr.span)

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
        if isinstance(decl, ast.FunctionDef):
            return FunctionRef(decl)
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
            raise self.error(TypeError_, f"cannot negate {described(value)}", expr.span)
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
            raise self.error(TypeError_, f"cannot compare {described(left)} with "
                             f"{described(right)}", expr.span)
        return self.arithmetic(expr, left, right)

    def arithmetic(self, expr: ast.Binary, left, right):
        op = expr.op
        ok = is_number(left) and is_number(right)
        if op == "+" and type(left) is type(right) and isinstance(left, (tuple, str)):
            ok = len(left) + len(right) <= self.limits.sequence
        if op == "*" and isinstance(left, tuple) and isinstance(right, int) and not isinstance(right, bool):
            ok = 0 <= len(left) * right <= self.limits.sequence
        if not ok:
            raise self.error(TypeError_, f"operator '{op}' cannot combine {described(left)} and "
                             f"{described(right)}", expr.span)
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
        return self.bounded(result, expr.span)

    def eval_Comprehension(self, expr: ast.Comprehension, env: Env):
        results = []
        for item in self.items(expr.iterable, env, "a comprehension"):
            self.tick(expr.span)
            inner = Env(env)
            self.bind_targets(expr.targets, item, inner, expr.span)
            if expr.condition is not None:
                keep = self.eval(expr.condition, inner)
                if not isinstance(keep, bool):
                    raise self.error(TypeError_, f"a comprehension's 'if' expects a condition, got "
                                     f"{described(keep)}", expr.condition.span)
                if not keep:
                    continue
            key = None if expr.key is None else self.eval(expr.key, inner)
            results.append((key, self.eval(expr.element, inner)))
            if len(results) > self.limits.sequence:
                raise self.error(ParameterError, f"a comprehension of more than {self.limits.sequence:,} items",
                                 expr.span)
        if expr.key is None:
            return self.bounded(tuple(value for _, value in results), expr.span)
        result = {}
        for key, value in results:
            if not isinstance(key, (int, str, bool, float)):
                raise self.error(TypeError_, f"dictionary keys must be numbers or strings, got {show(key)}",
                                 expr.key.span)
            result[key] = value
        return self.bounded(result, expr.span)

    def match_arguments(self, args: list[ast.Arg], names: list[str], what: str, env: "Env",
                        too_many: Callable[[], str], hint: Callable[[], str],
                        aliases: dict | None = None) -> dict[str, tuple[object, Span]]:
        """Pairs a call's arguments (evaluated in `env`) with parameter `names`: {name: (value, span)}.
        `too_many` and `hint` make the messages of a wrong call (only then: this runs for every call)."""
        aliases = aliases or {}
        given: dict[str, tuple[object, Span]] = {}
        positional_done = False
        for index, arg in enumerate(args):
            if arg.name is None:
                if positional_done:
                    raise self.error(TypeError_, "positional argument after a keyword argument", arg.span)
                if index >= len(names):
                    raise self.error(TypeError_, too_many(), arg.span)
                key = names[index]
            else:
                positional_done = True
                key = aliases.get(arg.name, arg.name)
                if key not in names:
                    raise self.error(NameError_, f"{what} has no parameter '{arg.name}'", arg.span,
                                     did_you_mean(arg.name, names + list(aliases)) or hint())
            if key in given:
                raise self.error(TypeError_, f"{what} got '{key}' twice", arg.span)
            given[key] = (self.eval(arg.value, env), arg.value.span)
        return given

    def bind_parameters(self, decl, what: str, given: dict, env: "Env", span: Span) -> None:
        """Defines a block's or function's parameters in `env`: the matched arguments, else the defaults
        (evaluated in `env`, so a default may read the parameters before it)."""
        for param in decl.params:
            if param.name in given:
                value = given[param.name][0]
            elif param.default is not None:
                value = self.eval(param.default, env)
            else:
                raise self.error(TypeError_, f"{what} is missing its '{param.name}' argument", span,
                                 f"{decl.name}({', '.join(p.name for p in decl.params)})")
            env.define(param.name, value, param.span)

    def call_function(self, decl: ast.FunctionDef, expr: ast.CallExpr, env: Env):
        """A user function's value: its body evaluated with the arguments bound, in a scope that sees
        only the file's declarations (no caller's names, no `in`)."""
        if self.function_depth >= self.limits.block_depth:
            raise self.error(ParameterError, f"functions nested more than {self.limits.block_depth} deep "
                             f"(does '{decl.name}' call itself without end?)", expr.span)
        self.tick(expr.span)
        names = [param.name for param in decl.params]
        what = f"function '{decl.name}'"
        given = self.match_arguments(expr.args, names, what, env,
                                     too_many=lambda: f"{what} takes {len(names)} arguments ({', '.join(names)}), "
                                                      f"got {len(expr.args)}",
                                     hint=lambda: f"its parameters are: {', '.join(names) or 'none'}")
        inner = Env()  # the file's declarations are found by name lookup; nothing else is visible
        self.bind_parameters(decl, what, given, inner, expr.span)
        self.function_depth += 1
        outer_scope, self.scope = self.scope, None  # a function sees no named tensors either
        try:
            return self.eval(decl.body, inner)
        finally:
            self.function_depth -= 1
            self.scope = outer_scope

    def eval_Cond(self, expr: ast.Cond, env: Env):
        test = self.eval(expr.test, env)
        if not isinstance(test, bool):
            raise self.error(TypeError_, f"'if' expects a condition, got {described(test)}",
                             expr.test.span)
        return self.eval(expr.then if test else expr.orelse, env)

    def eval_CallExpr(self, expr: ast.CallExpr, env: Env):
        func = self.eval(expr.func, env)
        if isinstance(func, FunctionRef):
            return self.call_function(func.decl, expr, env)
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
        return self.bounded(result, expr.span)

