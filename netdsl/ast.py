"""Typed AST of a .net file (pydantic models), built by `parse.py` from Lark's tree.

Nodes carry only what the source says plus their `Span`; names are not yet resolved and no
value is computed. `resolve.py` loads imports and `check.py` elaborates these nodes.
"""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict

from .errors import Span


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)
    span: Span


# ---- expressions -------------------------------------------------------------------------

class Expr(Node):
    pass


class Literal(Expr):
    value: Union[bool, int, float, str, None]


class ListExpr(Expr):
    items: list[Expr]


class DictExpr(Expr):
    items: list[tuple[Expr, Expr]]


class Name(Expr):
    name: str


class InputRef(Expr):
    """`in`: the shape of the tensor entering the current block."""


class Attr(Expr):
    value: Expr
    attr: str


class Index(Expr):
    value: Expr
    index: Expr


class Slice(Expr):
    value: Expr
    start: Expr | None
    stop: Expr | None


class Unary(Expr):
    op: str  # "-" or "not"
    operand: Expr


class Binary(Expr):
    op: str  # + - * / // % ** == != < <= > >= and or
    left: Expr
    right: Expr


class Cond(Expr):
    test: Expr
    then: Expr
    orelse: Expr


class Comprehension(Expr):
    """`[element for a, b in iterable if condition]`, or `{key: element for ...}` when `key` is set."""

    element: Expr
    key: Expr | None
    targets: list[str]
    iterable: Expr
    condition: Expr | None


class Arg(Node):
    name: str | None  # None for a positional argument
    value: Expr


class CallExpr(Expr):
    func: Expr
    args: list[Arg]


# ---- statements --------------------------------------------------------------------------

class Stmt(Node):
    pass


class Label(Node):
    """`name:` or `"name{expr}":`; `parts` alternate literal text and expressions."""

    parts: list[Union[str, Expr]]

    @property
    def is_plain(self) -> bool:
        return len(self.parts) == 1 and isinstance(self.parts[0], str)


class InputStmt(Stmt):
    dims: ListExpr


class Let(Stmt):
    name: str
    value: Expr


class For(Stmt):
    targets: list[str]
    iterable: Expr
    body: list[Stmt]


class If(Stmt):
    branches: list[tuple[Expr, list[Stmt]]]
    orelse: list[Stmt] | None


class Assert(Stmt):
    test: Expr
    message: str | None  # as written
    parts: list[Union[str, Expr]] | None = None  # the message's literal text and `{expr}` parts, as a label template


class Unit(Node):
    """What a layer statement instantiates."""


class Call(Unit):
    name: str
    name_span: Span
    args: list[Arg]


class Group(Unit):
    body: list[Stmt]


class Combinator(Unit):
    """`keyword { body } [shortcut stmt]`: a combinator of `netdsl/combinators.py` (residual,
    inception, dense, gate, add, aux, ...); what its body means is the combinator's."""

    keyword: str
    body: list[Stmt]
    shortcut: "LayerStmt | None" = None


class From(Unit):
    """`from name`: continue from the tensor named by `tap name` (or passed in as an argument);
    `from name[start:stop]`: from its channels start..stop-1."""

    name: str
    sliced: bool = False
    start: Expr | None = None  # the slice's bounds, when written
    stop: Expr | None = None


class Tap(Stmt):
    """`tap name`: names the current tensor, for `from name` or a block argument later on."""

    name: str


class LayerStmt(Stmt):
    label: Label | None
    unit: Unit
    repeat: Expr | None


class Chain(Stmt):
    """`a -> b -> c`: layers applied in turn; inside `inception`, one branch without a submodule."""

    stmts: list[LayerStmt]


Combinator.model_rebuild()


# ---- declarations ------------------------------------------------------------------------

class Param(Node):
    name: str
    default: Expr | None


class Decl(Node):
    name: str


class Import(Node):
    path: str


class BlockDef(Decl):
    params: list[Param]
    body: list[Stmt]


class NetworkDef(Decl):
    params: list[Param]
    body: list[Stmt]


class FunctionDef(Decl):
    """`def name(params) = expr`: a pure function of its arguments (no tensors, no `in`)."""

    params: list[Param]
    body: Expr


class VariantDef(Decl):
    """`network resnet152 = resnet(depth=152)`: a network with new parameter defaults."""

    base: str
    base_span: Span
    args: list[Arg]


class SourceFile(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)
    path: str
    imports: list[Import]
    decls: list[Decl]


# ---- construction without validation ------------------------------------------------------

_set = object.__setattr__


def make(cls: type[BaseModel], **fields):
    """`cls(**fields)` without pydantic's validation, for the parser, whose values have the declared
    types already: what `cls.model_construct(**fields)` makes, at a fraction of its cost (each node
    of a 5 MB file is made this way)."""
    missing = _defaults(cls)
    values = fields if not missing or missing.keys() <= fields.keys() else {**missing, **fields}
    node = cls.__new__(cls)
    _set(node, "__dict__", values)
    _set(node, "__pydantic_fields_set__", set(fields))
    _set(node, "__pydantic_extra__", None)
    _set(node, "__pydantic_private__", None)
    return node


_DEFAULTS: dict[type, dict] = {}


def _defaults(cls: type[BaseModel]) -> dict:
    """The default of each of `cls`'s fields that has one (none of the AST's has a default factory)."""
    known = _DEFAULTS.get(cls)
    if known is None:
        known = _DEFAULTS[cls] = {name: field.default for name, field in cls.model_fields.items()
                                  if not field.is_required()}
    return known


# ---- traversal ---------------------------------------------------------------------------

def children(node: Node) -> list[Node]:
    """The nodes directly inside `node`, in field order (through lists and tuples)."""
    found: list[Node] = []
    stack = [getattr(node, name) for name in reversed(type(node).model_fields)]
    while stack:
        value = stack.pop()
        if isinstance(value, Node):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            stack.extend(reversed(value))
    return found


def walk(node: Node):
    """`node` and every node below it (iteratively: a deeply nested file must not exhaust the stack)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(children(current))
