"""Values of the expression language and its built-in functions (used by the checker).

Numbers are Python ints and floats, lists are tuples, dicts are dicts; `BlockRef` and `OpRef`
let blocks and layers be passed as arguments; `TensorShape` is what `in` evaluates to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .limits import Limits
from . import ast


class ValueProblem(Exception):
    """A builtin's complaint; the checker attaches the location."""


@dataclass(frozen=True)
class BlockRef:
    decl: ast.BlockDef

    def __str__(self) -> str:
        return f"block {self.decl.name}"


@dataclass(frozen=True)
class FunctionRef:
    decl: ast.FunctionDef

    def __str__(self) -> str:
        return f"function {self.decl.name}"


@dataclass(frozen=True)
class OpRef:
    name: str

    def __str__(self) -> str:
        return f"layer {self.name}"


@dataclass(frozen=True)
class TensorShape:
    """The incoming tensor's shape: `in.channels`, `in.height`, `in.width`, `in.shape`."""

    shape: tuple[int, ...]

    ATTRIBUTES = ("channels", "height", "width", "features", "shape", "rank", "c", "h", "w")

    def attr(self, name: str):
        if name == "shape":
            return self.shape
        if name == "rank":
            return len(self.shape)
        spatial = len(self.shape) == 3
        if name in ("channels", "c", "features"):
            return self.shape[0]
        if name in ("height", "h") and spatial:
            return self.shape[1]
        if name in ("width", "w") and spatial:
            return self.shape[2]
        raise KeyError(name)

    def __str__(self) -> str:
        return "[" + ", ".join(map(str, self.shape)) + "]"


@dataclass(frozen=True)
class Builtin:
    name: str
    fn: Callable
    signature: str

    def __str__(self) -> str:
        return f"function {self.name}"


MAX_SEQUENCE = Limits().sequence  # what a built-in function may build (the checker's default bound)


def type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return "list"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, BlockRef):
        return "block"
    if isinstance(value, OpRef):
        return "layer"
    if isinstance(value, TensorShape):
        return "shape"
    if type(value).__name__ == "Wire":
        return "tensor"
    return "function"


def article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


SHOWN = 300  # characters of a value quoted in a message; a longer one is cut, ending in "..."


def show(value, width: int = SHOWN) -> str:
    """A value as netdsl source would spell it, cut at `width` characters: quoting a list of a million
    shared lists costs no more than quoting a short one."""
    parts: list[str] = []
    room = [width + 1]

    def put(text: str) -> None:
        parts.append(text[:room[0]])
        room[0] -= len(text)
        if room[0] <= 0:
            raise _Full

    def spell(value) -> None:
        if isinstance(value, tuple):
            put("[")
            for index, item in enumerate(value):
                if index:
                    put(", ")
                spell(item)
            put("]")
        elif isinstance(value, dict):
            put("{")
            for index, (key, item) in enumerate(value.items()):
                put(", " if index else "")
                spell(key)
                put(": ")
                spell(item)
            put("}")
        else:
            put(_scalar(value))

    try:
        spell(value)
    except _Full:
        return "".join(parts)[:max(width - 3, 0)] + "..."
    return "".join(parts)


class _Full(Exception):
    """`show` has written as much as it may."""


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'"{value}"'
    if type(value).__name__ == "Wire":
        return f"tensor {value.name} [{', '.join(map(str, value.shape))}]"
    return str(value)


def value_size(value, limit: int) -> int:
    """How many elements `value` holds: list items and dictionary keys and values, each counted every
    time it occurs (a list held twice counts twice), and a string's characters. Counts each distinct
    list once, so it costs no more than the value's distinct parts; stops counting past `limit`."""
    counted: dict[int, int] = {}

    def count(value) -> int:
        if isinstance(value, str):
            return max(len(value), 1)
        if not isinstance(value, (tuple, dict)):
            return 1
        known = counted.get(id(value))
        if known is not None:
            return known
        total = 1
        for item in (value if isinstance(value, tuple) else (*value, *value.values())):
            total += count(item)
            if total > limit:
                break
        counted[id(value)] = total
        return total

    return count(value)


def described(value) -> str:
    """`int 5`, `list [1, 2]`, `layer conv`: a value with its type, as messages quote it -- the type
    named once (a layer's, block's, function's or tensor's spelling already says what it is)."""
    shown, kind = show(value), type_name(value)
    return shown if shown.startswith(f"{kind} ") else f"{kind} {shown}"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value, what: str):
    if not is_number(value):
        raise ValueProblem(f"{what} expects a number, got {described(value)}")
    return value


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueProblem(f"{what} expects an integer, got {described(value)}")
    return value


def make_divisible(value, divisor=8, min_value=None):
    """Round `value` to a multiple of `divisor`, never below 90% of it (MobileNet/EfficientNet)."""
    _number(value, "make_divisible")
    _int(divisor, "make_divisible divisor")
    if divisor < 1:
        raise ValueProblem("make_divisible divisor must be at least 1")
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _range(*args):
    for a in args:
        _int(a, "range")
    if len(args) not in (1, 2, 3):
        raise ValueProblem("range takes 1 to 3 arguments")
    if len(args) == 3 and args[2] == 0:
        raise ValueProblem("range step must not be zero")
    result = range(*args)
    if len(result) > MAX_SEQUENCE:
        raise ValueProblem(f"range of {len(result)} items exceeds the limit of {MAX_SEQUENCE}")
    return tuple(result)


def _sequence(value, what: str) -> tuple:
    if isinstance(value, dict):
        return tuple(value)
    if not isinstance(value, tuple):
        raise ValueProblem(f"{what} expects a list, got {described(value)}")
    return value


def _minmax(fn, name):
    def apply(*args):
        items = _sequence(args[0], name) if len(args) == 1 else args
        if not items:
            raise ValueProblem(f"{name} of an empty list")
        for item in items:
            _number(item, name)
        return fn(items)
    return apply


def _positive(value, what: str):
    if _number(value, what) <= 0:
        raise ValueProblem(f"{what} expects a positive number, got {show(value)}")
    return value


def _log(value, base=None):
    if base is None:
        return math.log(_positive(value, "log"))
    if _positive(base, "log base") == 1:
        raise ValueProblem("log base must not be 1")
    return math.log(_positive(value, "log"), base)


def _sqrt(value):
    if _number(value, "sqrt") < 0:
        raise ValueProblem(f"sqrt of a negative number: {show(value)}")
    return math.sqrt(value)


INT_BITS = Limits().int_bits  # the largest integer a built-in function may build, as arithmetic


def _pow(base, exponent):
    """`base ** exponent` with the bounds of the `**` operator."""
    _number(base, "pow")
    _number(exponent, "pow")
    if abs(base) > 1 and exponent * math.log2(abs(base)) > INT_BITS:
        raise ValueProblem(f"{show(base)} ** {show(exponent)} is too large")
    if base == 0 and exponent < 0:
        raise ValueProblem("0 cannot be raised to a negative power")
    result = base ** exponent
    if isinstance(result, complex):
        raise ValueProblem("the result is not a real number")
    return result


def _round(value, digits=None):
    _number(value, "round")
    return round(value) if digits is None else round(value, _int(digits, "round"))


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("ceil", lambda x: math.ceil(_number(x, "ceil")), "ceil(x) -> int"),
    Builtin("floor", lambda x: math.floor(_number(x, "floor")), "floor(x) -> int"),
    Builtin("round", _round, "round(x, digits=none): Python's rounding"),
    Builtin("abs", lambda x: abs(_number(x, "abs")), "abs(x)"),
    Builtin("int", lambda x: int(_number(x, "int")), "int(x): truncates toward zero"),
    Builtin("float", lambda x: float(_number(x, "float")), "float(x)"),
    Builtin("min", _minmax(min, "min"), "min(a, b, ...) or min(list)"),
    Builtin("max", _minmax(max, "max"), "max(a, b, ...) or max(list)"),
    Builtin("sum", lambda xs: sum(_number(x, "sum") for x in _sequence(xs, "sum")), "sum(list)"),
    Builtin("len", lambda xs: len(_sequence(xs, "len")), "len(list)"),
    Builtin("range", _range, "range(stop) / range(start, stop, step=1)"),
    Builtin("enumerate", lambda xs: tuple(enumerate(_sequence(xs, "enumerate"))), "enumerate(list) -> [[i, x], ...]"),
    Builtin("zip", lambda *xs: tuple(zip(*(_sequence(x, "zip") for x in xs))), "zip(a, b, ...)"),
    Builtin("make_divisible", make_divisible, "make_divisible(v, divisor=8, min_value=divisor)"),
    Builtin("log", _log, "log(x, base=e)"),
    Builtin("log2", lambda x: math.log2(_positive(x, "log2")), "log2(x)"),
    Builtin("exp", lambda x: math.exp(_number(x, "exp")), "exp(x)"),
    Builtin("sqrt", _sqrt, "sqrt(x)"),
    Builtin("pow", _pow, "pow(x, y): x ** y"),
)}
