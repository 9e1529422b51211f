"""Stage 1 — parse: .net source text → `ast.SourceFile`.

Lark (LALR) parses with `grammar/netdsl.lark` (its COMBINATOR terminal made of the combinator
registry's keywords) and, as it reduces each rule, `_ToAst` builds the typed AST node at once (see
NOTE: [Parsing without a tree]); it validates nothing. Syntax errors are rephrased for humans, with
a location and a caret.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
from pathlib import Path
from typing import Iterator
import threading

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.parse_tree_builder import ParseTreeBuilder

from . import ast
from .combinators import COMBINATORS
from .limits import Limits
from .errors import NameError_, OutputError, Span, SyntaxError_, did_you_mean, remember_source


def grammar_path() -> Path:
    """The grammar shipped inside the package, or `grammar/` beside it in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "grammar" / "netdsl.lark", here.parent / "grammar" / "netdsl.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("netdsl.lark is missing from the installation")


def _parser() -> Lark:
    """The parser for the grammar and the combinators registered now."""
    return _build_parser(tuple(sorted(COMBINATORS)))


def grammar_text(combinators: tuple[str, ...] | None = None) -> str:
    """The grammar, with the COMBINATOR terminal made of the registered combinators' keywords."""
    combinators = tuple(sorted(COMBINATORS)) if combinators is None else combinators
    pattern = "/(?:" + "|".join(re.escape(keyword) for keyword in combinators) + r")(?![A-Za-z0-9_])/"
    return _COMBINATOR_LINE.sub(lambda _: f"COMBINATOR.2: {pattern}", grammar_path().read_text(encoding="utf-8"))


_COMBINATOR_LINE = re.compile(r"^COMBINATOR\.2: .*$", re.MULTILINE)


@functools.lru_cache(maxsize=8)
def _build_parser(combinators: tuple[str, ...]) -> Lark:
    """The parser for these combinators; its `parse` returns AST nodes (`_Reducer`), never a tree."""
    parser = _lark(grammar_text(combinators))
    _Reducer(parser)
    return parser


LARK_OPTIONS = {"parser": "lalr", "start": ["start", "expr"], "maybe_placeholders": True}


def _lark(grammar: str, cache: Path | None = None) -> Lark:
    """lark's parser for `grammar`, its tables read from the cache when they were built before
    (NOTE: [The parser cache]); `cache`: the directory (default `cache_dir()`)."""
    import hashlib
    import json

    import lark

    folder = cache_dir() if cache is None else cache
    key = hashlib.sha256(json.dumps([grammar, lark.__version__, LARK_OPTIONS]).encode()).hexdigest()[:32]
    path = folder / f"parser-{key}.json" if folder is not None else None
    if path is not None:
        try:
            saved = json.loads(path.read_bytes(), object_pairs_hook=_int_keys)
            if saved.get("key") == key:
                return Lark._load_from_dict(saved["data"], saved["memo"])
        except Exception:  # absent, unreadable or not what was written: build it  # noqa: BLE001
            pass
    parser = Lark(grammar, **LARK_OPTIONS)
    if path is not None:
        data, memo = parser.memo_serialize([lark.lexer.TerminalDef, lark.grammar.Rule])
        _write_cache(path, json.dumps({"key": key, "data": data, "memo": memo}).encode())
    return parser


def _int_keys(pairs: list) -> dict:
    """JSON's object keys are strings; the tables' integer keys (states, memo entries) are digits."""
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


def cache_dir() -> Path | None:
    """Where netdsl keeps what it can rebuild: `$NETDSL_CACHE_DIR`, else `$XDG_CACHE_HOME/netdsl`,
    else `~/.cache/netdsl`; None when `NETDSL_CACHE_DIR` is empty (no cache)."""
    import os

    chosen = os.environ.get("NETDSL_CACHE_DIR")
    if chosen is not None:
        return Path(chosen) if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netdsl"


def _write_cache(path: Path, content: bytes) -> None:
    """Writes a cache file whole or not at all (`fileio.write_atomically`): a cache that cannot be
    written (a read-only home, a full disk) only costs the next process the build."""
    from .fileio import write_atomically

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, lambda temporary: Path(temporary).write_bytes(content))
    except (OSError, OutputError):
        pass


# NOTE: [The parser cache]
# lark computes the LALR tables from the grammar in every process: 0.1-0.3 s, most of a `netdsl
# check` of a file. They are a function of the grammar text (which holds the registered combinators'
# keywords), lark's version and the options, so they are saved once, as JSON (lark's own
# serialization, no pickle: reading a cache runs no code), in the user's cache directory under a
# hash of those three, and read back in 10 ms. A file that is missing, damaged or from another
# grammar is ignored and rebuilt; one that cannot be written is skipped. tests/test_grammar.py parses
# every shipped file with a built and a loaded parser and compares the ASTs.


# NOTE: [Parsing without a tree]
# Building lark's parse tree (with positions propagated) and then transforming it into the AST
# cost five times what lexing and the LALR automaton do (100,000 small blocks: 48 s). So lark's
# reduce callbacks are replaced: each rule's callback computes the extent of what it reduced
# from its children as they are (tokens, and the extents recorded for the values of earlier
# reductions: lark's `propagate_positions`, containers included), then lets lark's own child
# filter (anonymous tokens dropped, `_rule`s inlined, `[x]` placeholders, `?rule` passed through)
# hand the children to the `_ToAst` method, which returns the node. The extents of consumed
# children are dropped, so the record holds no more than the parser's stack. The tree is never
# built, so nothing recurses: nesting is bounded instead by `MAX_NESTING` levels of nodes, about
# where the recursive transformer used to give up (and the later stages, which recurse, hold).
# One parse at a time per parser (a lock) -- and one inside it, for a label template's expression,
# which saves and restores the record of the parse around it.

MAX_NESTING = 400  # levels of nodes in one file or expression


class _Extent:
    """Where a reduced value lies in the text, and how deeply nested it is (lark's `Meta`, lean)."""

    __slots__ = ("line", "column", "end_line", "end_column", "depth")
    empty = False

    def __init__(self, line, column, end_line, end_column, depth):
        self.line, self.column, self.end_line, self.end_column, self.depth = line, column, end_line, end_column, depth


class _NoExtent:
    empty = True
    depth = 0


_NO_EXTENT = _NoExtent()


class _Reducer:
    """Installs in `parser` the callbacks that build AST nodes as lark reduces (NOTE: [Parsing without a tree])."""

    def __init__(self, parser: Lark):
        self.lock = threading.RLock()
        self.builder: _ToAst | None = None  # the parse under way: its file and anchor
        self.extents: dict[int, _Extent] = {}
        self.current: _Extent | _NoExtent = _NO_EXTENT
        automaton = parser.parser.parser.parser  # lark's LALR: frontend -> LALR_Parser -> _Parser
        lark_built = ParseTreeBuilder(parser.rules, Tree, False, False, True).create_callback(self)
        callbacks = dict(automaton.callbacks)  # (the lexer's, by terminal name, stay)
        for rule, inner in lark_built.items():
            passes_on = (rule.options.expand1 and not rule.alias and len(rule.expansion) == 1
                         and not rule.expansion[0].is_term and not rule.expansion[0].name.startswith("_"))
            # `?sum: product` and the like hand their one child on unchanged, extent and all: most reductions
            callbacks[rule] = _first if passes_on else self.reducer(inner)
        for actions in automaton.parse_table.states.values():  # keyed by the table's own rule objects, each
            for _, rule in actions.values():  # lookup is found by identity, not by Rule.__eq__
                if not isinstance(rule, int) and rule in callbacks:
                    callbacks[rule] = callbacks.pop(rule)
        automaton.callbacks = callbacks
        self._drive_with(automaton)
        parser.netdsl_reducer = self

    @staticmethod
    def _drive_with(automaton) -> None:
        """Replaces lark's LALR loop (`parse_from_state`) in `automaton` with `drive`, the same loop on
        a table made for it. NOTE: [The LALR loop] lark's own loop spent a third of a large file's
        check on bookkeeping around the table lookups: its table is keyed by lark `Token`s (a Python
        `__eq__` per lookup), each reduce compared its `Rule` with the end state (another Python
        `__eq__`, in an `assert`) and read a rule's size and callback through three attributes. Here
        each state maps a terminal or rule name (a plain `str`) to `(True, next state)` for a shift or
        a goto and to `(False, (size, callback, rule name))` for a reduce. A token the table has no
        action for goes to lark's own `feed_token`, which raises its `UnexpectedToken` (and lark's
        loop remains the reference: the grammar tests parse through both)."""
        from lark.parsers.lalr_analysis import Shift
        from lark.parsers.lalr_interactive_parser import InteractiveParser

        callbacks = automaton.callbacks
        table = {state: {str(key): (True, target) if action is Shift else
                         (False, (len(target.expansion), callbacks[target], str(target.origin.name)))
                         for key, (action, target) in actions.items()}
                 for state, actions in automaton.parse_table.states.items()}
        lexed = {name: callback for name, callback in callbacks.items() if isinstance(name, str)}
        lark_loop = automaton.parse_from_state

        def drive(state, last_token=None):
            if state.value_stack or len(state.state_stack) != 1:
                return lark_loop(state, last_token)  # resuming a parse: lark's loop
            stack, values = state.state_stack, state.value_stack
            end_state = state.parse_conf.end_state
            token = last_token
            try:
                tokens = state.lexer.lex(state)
                is_end = False
                while True:
                    if not is_end:
                        token = next(tokens, None)
                        if token is None:
                            is_end = True
                            token = (Token.new_borrow_pos("$END", "", last_token) if last_token
                                     else Token("$END", "", 0, 1, 1))
                        else:
                            last_token = token
                    kind = token.type
                    while True:
                        action = table[stack[-1]].get(kind)
                        if action is None:
                            return state.feed_token(token, is_end)  # raises lark's UnexpectedToken
                        if action[0]:
                            stack.append(action[1])
                            values.append(lexed[kind](token) if kind in lexed else token)
                            break
                        size, callback, name = action[1]
                        if size:
                            children = values[-size:]
                            del stack[-size:]
                            del values[-size:]
                        else:
                            children = []
                        value = callback(children)
                        stack.append(table[stack[-1]][name][1])
                        values.append(value)
                        if is_end and stack[-1] == end_state:
                            return values[-1]
            except UnexpectedInput as error:
                error.interactive_parser = InteractiveParser(automaton, state, state.lexer)
                raise

        automaton.parse_from_state = drive
        automaton.netdsl_lark_loop = lark_loop  # the reference, for the tests

    def __getattr__(self, rule_name: str):
        """What lark's child filter calls for `rule_name`: the `_ToAst` method (or a lark `Tree`, for the
        inlined `_rule`s, whose children are spliced into their parent's)."""
        if rule_name.startswith("_") or not hasattr(_ToAst, rule_name):
            raise AttributeError(rule_name)
        return lambda children: getattr(self.builder, rule_name)(self.current, children)

    def reducer(self, inner):
        def reduce(children):
            extents = self.extents
            first = last = deepest = None
            depth = 0
            for child in children:
                if type(child) is Token:
                    if first is None:
                        first = child
                    last = child
                    continue
                extent = extents.pop(id(child), None)
                if extent is not None:
                    if first is None:
                        first = extent
                    last = extent
                    if extent.depth >= depth:
                        depth, deepest = extent.depth, child
            extent = _NO_EXTENT if first is None else _Extent(first.line, first.column, last.end_line,
                                                              last.end_column, depth)
            self.current = extent
            value = inner(children)
            if first is not None and value is not None and type(value) is not Token:
                # a node is a level deeper than its children; a `?rule` passing one on, or an inlined
                # list of items (a lark Tree), is not
                if value is not deepest and type(value) is not Tree:
                    extent.depth = depth + 1
                    if depth >= MAX_NESTING:
                        raise _TooDeep
                extents[id(value)] = extent
            return value

        return reduce

    def parse(self, parser: Lark, text: str, start: str, builder: "_ToAst"):
        with self.lock:
            saved = self.builder, self.extents, self.current
            self.builder, self.extents = builder, {}
            try:
                with without_collection():
                    return parser.parse(text, start=start)
            finally:
                self.builder, self.extents, self.current = saved


def _first(children: list):
    return children[0]


@contextlib.contextmanager
def without_collection() -> Iterator[None]:
    """Python's cycle collector paused: each collection would scan again every node made so far (a
    quarter of the time of checking a large file). Parsing and loading make no reference cycles; what
    a check makes is collected once the pause ends."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class _TooDeep(Exception):
    """More than `MAX_NESTING` levels of nodes."""


def _parse_with(parser: Lark, text: str, start: str, builder: "_ToAst", where: Span, what: str):
    """`text` parsed from `start` into AST nodes by `builder`; too deep a nesting is a located error."""
    try:
        return parser.netdsl_reducer.parse(parser, text, start, builder)
    except (_TooDeep, RecursionError):
        raise SyntaxError_(f"{what} is nested too deeply to parse", where,
                           "flatten deeply nested groups or expressions") from None


def keywords() -> frozenset[str]:
    """The language's reserved words: the grammar's literal terminals and the combinators."""
    known, words = _known_keywords
    if known != COMBINATORS.keys():  # a plugin registered a combinator since (checked on every `let`)
        known, words = _known_keywords[:] = [set(COMBINATORS), _keywords(tuple(sorted(COMBINATORS)))]
    return words


_known_keywords: list = [None, frozenset()]  # (the combinators, their keywords) of the last call

_REPETITION_HINT = "'x' is reserved for repetition ('layer(...) x 3'); choose another name"


def reserved(name: str, span: Span) -> NameError_ | None:
    """The error for a reserved word used as a name (a block, network, parameter, `let` or tap), or
    None if `name` is not one."""
    if name not in keywords():
        return None
    return NameError_(f"'{name}' is a reserved word and cannot be used as a name", span,
                      _REPETITION_HINT if name == "x" else f"use '{name}_' or another name")


@functools.lru_cache(maxsize=8)
def _keywords(combinators: tuple[str, ...]) -> frozenset[str]:
    literals = {t.pattern.value for t in _build_parser(combinators).terminals
                if t.pattern.type == "str" and t.pattern.value.isidentifier()}
    return frozenset(literals | set(combinators))


# Human names for the grammar's terminals, used in "expected ..." lists.
_TOKEN_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "DOT": "'.'",
    "COMPARE_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/', '//' or '%'",
    "MINUS": "'-'", "POW_OP": "'**'", "ARROW": "'->'", "$END": "end of file",
}


def _describe(token_type: str) -> str:
    if token_type in _TOKEN_NAMES:
        return _TOKEN_NAMES[token_type]
    if token_type.isupper() and not token_type.startswith("__"):
        return f"'{token_type.lower()}'"
    return token_type


def _token_text(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    return f"'{token.value}'"


def source_text(text: str) -> str:
    """`text` as the grammar reads it: a leading UTF-8 byte-order mark dropped, and CR LF and a lone
    CR (old Mac files) made LF, so that lines, columns and comments are the same whatever the editor
    wrote. Lines keep their columns: the mark is not a character of the first line."""
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def parse(text: str, path: str = "<string>") -> ast.SourceFile:
    """Parse a whole .net file. The AST is treated as immutable by every later stage, so a file
    parsed again unchanged (the standard library, once per network checked) comes from a cache."""
    text = source_text(text)
    remember_source(path, text)
    return _parse_cached(text, path, tuple(sorted(COMBINATORS)))


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str, path: str, combinators: tuple[str, ...]) -> ast.SourceFile:
    try:
        return _parse_with(_build_parser(combinators), text, "start", _ToAst(path), Span(path, 1, 1), "the file")
    except UnexpectedInput as error:
        raise _syntax_error(error, text, path) from None


def _check_bodies_after_calls(stmts: list) -> None:
    """`name(args) { ... }` on one line reads as a call taking a body, which only combinators do; the
    grammar would take it as a call followed by a group, so it is refused here, located. Run on every
    list of statements as it is built (a body, a chain)."""
    for first, second in zip(stmts, stmts[1:]):
        if not (isinstance(first, ast.LayerStmt) and isinstance(second, ast.LayerStmt)):
            continue
        call, group = first.unit, second.unit
        if (isinstance(call, ast.Call) and first.repeat is None and isinstance(group, ast.Group)
                and second.label is None and second.repeat is None
                and (call.span.end_line, call.span.end_column) > (call.name_span.end_line, call.name_span.end_column)
                and group.span.line == call.span.end_line):
            known = did_you_mean(call.name, COMBINATORS)
            raise SyntaxError_(
                f"'{call.name}(...)' cannot take a body: only a combinator is followed by '{{ ... }}'",
                Span(call.span.file, group.span.line, group.span.column),
                known or f"combinators: {', '.join(sorted(COMBINATORS))}; to start a group after the "
                         f"call, put it on a line of its own")


def parse_expr(text: str, span: Span, what: str = "label template") -> ast.Expr:
    """Parse one expression found inside a string (a label template, a -D value); errors at `span`."""
    try:
        return _parse_with(_parser(), text, "expr", _ToAst(span.file, anchor=span), span, f"the {what}")
    except UnexpectedInput:
        shown = text if len(text) <= 60 else f"{text[:57]}..."
        raise SyntaxError_(f"invalid expression '{shown}' in {what}", span) from None


def _syntax_error(error: UnexpectedInput, text: str, path: str) -> SyntaxError_:
    line = getattr(error, "line", None) or 1
    column = getattr(error, "column", None) or 1
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        expected = getattr(error, "expected", None) or getattr(error, "accepts", None) or []
        message = "unexpected end of file"
        hint = "is a '}' or ')' missing?" if {"RBRACE", "RPAR"} & set(expected) else None
        return SyntaxError_(message, Span(path, line, column), hint, notes=_unclosed(text, len(text), expected, path, at_end=True))
    if isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else "?"
        hint = None
        if char == "'":
            hint = "strings use double quotes"
        elif char in "<>!=&|":
            hint = "operators are == != < <= > >=, and / or / not"
        return SyntaxError_(f"unexpected character {char!r}", Span(path, line, column), hint)
    assert isinstance(error, UnexpectedToken)
    token = error.token
    # keywords are not listed (wherever a combinator may start, so may a name): as lark lists none of its own
    expected = sorted({_describe(t) for t in error.expected if not t.startswith("__") and t != "COMBINATOR"})
    message = f"unexpected {_token_text(token)}"
    if expected and len(expected) <= 8:
        message += f"; expected {', '.join(expected[:-1]) + ' or ' if len(expected) > 1 else ''}{expected[-1]}"
    hint = None
    before = text[:token.start_pos].rstrip() if token.start_pos is not None else ""
    if token.type == "EQUAL" and "COMPARE_OP" in error.expected:
        hint = "comparison is '=='"
    elif token.type == "EQUAL" and "COLON" in error.expected:
        hint = "a label is written 'name: layer(...)'"
    elif token.type == "X" or (token.type == "COLON" and re.search(r"(^|\W)x$", before)):
        hint = _REPETITION_HINT
    end = Span(path, token.line, token.column, token.end_line, token.end_column)
    return SyntaxError_(message, end, hint, notes=_unclosed(text, token.start_pos, error.expected, path))


_CLOSING = {"RPAR": ")", "RSQB": "]", "RBRACE": "}"}
_OPENING = {"(": ")", "[": "]", "{": "}"}


def _unclosed(text: str, end: int | None, expected, path: str, at_end: bool = False) -> tuple[tuple[str, Span], ...]:
    """Where the bracket a `)`, `]` or `}` the parser expected would close was opened, when that is on
    an earlier line than the error (a missing `)` is only noticed at the next line's first token).
    A `{` only at the end of the file: every error inside a body could be closing it."""
    wanted = {_CLOSING[t] for t in expected if t in _CLOSING}
    if not wanted or end is None:
        return ()
    stack: list[tuple[str, int]] = []
    position = 0
    while position < end:  # brackets outside strings and comments
        char = text[position]
        if char == '"':
            close = text.find('"', position + 1)
            position = end if close < 0 else close + 1
            continue
        if char == "#":
            newline = text.find("\n", position)
            position = end if newline < 0 else newline
            continue
        if char in _OPENING:
            stack.append((char, position))
        elif char in _OPENING.values() and stack and _OPENING[stack[-1][0]] == char:
            stack.pop()
        position += 1
    if not stack or _OPENING[stack[-1][0]] not in wanted or (stack[-1][0] == "{" and not at_end):
        return ()
    opening, offset = stack[-1]
    line = text.count("\n", 0, offset) + 1
    if line == text.count("\n", 0, end) + 1:
        return ()  # on the error's own line: the caret already shows it
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return ((f"the '{opening}' is not closed", Span(path, line, column, line, column + 1)),)


_TEMPLATE_PART = re.compile(r"\{([^{}]*)\}")


_INT_BITS = Limits().int_bits


class _ToAst:
    """Builds the AST node of each rule from its children and extent (`meta`). No validation here: the
    nodes are made with `ast.make` (pydantic's `model_construct`, faster), from values of the declared types."""

    def __init__(self, path: str, anchor: Span | None = None):
        self.path = path
        self.anchor = anchor

    def _span(self, meta) -> Span:
        if self.anchor is not None:  # expression parsed out of a string: report the string
            return self.anchor
        if getattr(meta, "empty", True):
            return Span(self.path, 1, 1)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok_span(self, token: Token) -> Span:
        if self.anchor is not None:
            return self.anchor
        return Span(self.path, token.line, token.column, token.end_line, token.end_column)

    # ---- file structure
    def start(self, meta, items):
        imports = [i for i in items if isinstance(i, ast.Import)]
        decls = [i for i in items if isinstance(i, ast.Decl)]
        return ast.make(ast.SourceFile, path=self.path, imports=imports, decls=decls)

    def import_decl(self, meta, children):
        return ast.make(ast.Import, span=self._span(meta), path=_unquote(children[0]))

    def block_decl(self, meta, children):
        name, params, body = children
        return ast.make(ast.BlockDef, span=self._tok_span(name), name=str(name), params=params or [], body=body)

    def network_decl(self, meta, children):
        name, params, body = children
        return ast.make(ast.NetworkDef, span=self._tok_span(name), name=str(name), params=params or [], body=body)

    def function_decl(self, meta, children):
        name, params, body = children
        return ast.make(ast.FunctionDef, span=self._tok_span(name), name=str(name), params=params or [], body=body)

    def variant_decl(self, meta, children):
        name, base, args = children
        return ast.make(ast.VariantDef, 
            span=self._tok_span(name), name=str(name), base=str(base),
            base_span=self._tok_span(base), args=args,
        )

    def param_list(self, meta, children):
        return [c for c in children if c is not None]

    def param(self, meta, children):
        name, default = children
        return ast.make(ast.Param, span=self._tok_span(name), name=str(name), default=default)

    def body(self, meta, children):
        _check_bodies_after_calls(children)
        return list(children)

    # ---- statements
    def input_stmt(self, meta, children):
        return ast.make(ast.InputStmt, span=self._span(meta), dims=children[0])

    def let_stmt(self, meta, children):
        name, value = children
        return ast.make(ast.Let, span=self._tok_span(name), name=str(name), value=value)

    def for_stmt(self, meta, children):
        *targets, iterable, body = children
        return ast.make(ast.For, span=self._span(meta), targets=[str(t) for t in targets], iterable=iterable, body=body)

    def if_stmt(self, meta, children):
        test, body, *rest = children
        branches = [(test, body)]
        orelse = None
        for clause in rest:
            if clause is None:
                continue
            kind, payload = clause
            if kind == "elif":
                branches.append(payload)
            else:
                orelse = payload
        return ast.make(ast.If, span=self._span(meta), branches=branches, orelse=orelse)

    def elif_clause(self, meta, children):
        return ("elif", (children[0], children[1]))

    def else_clause(self, meta, children):
        return ("else", children[0])

    def assert_stmt(self, meta, children):
        test, message = children
        text = _unquote(message) if message else None
        parts = _template(text, self._tok_span(message)) if message else None
        return ast.make(ast.Assert, span=self._span(meta), test=test, message=text, parts=parts)

    def chain_stmt(self, meta, children):
        stmts = [c for c in children if isinstance(c, ast.LayerStmt)]
        _check_bodies_after_calls(stmts)
        return ast.make(ast.Chain, span=self._span(meta), stmts=stmts)

    def layer_stmt(self, meta, children):
        label, unit, repeat = children
        return ast.make(ast.LayerStmt, span=self._span(meta), label=label, unit=unit, repeat=repeat)

    def name_label(self, meta, children):
        return ast.make(ast.Label, span=self._tok_span(children[0]), parts=[str(children[0])])

    def template_label(self, meta, children):
        span = self._tok_span(children[0])
        return ast.make(ast.Label, span=span, parts=_template(_unquote(children[0]), span) or [""])

    def repeat(self, meta, children):
        return children[0]

    def call(self, meta, children):
        name, args = children
        return ast.make(ast.Call, span=self._span(meta), name=str(name), name_span=self._tok_span(name), args=args or [])

    def group(self, meta, children):
        return ast.make(ast.Group, span=self._span(meta), body=children[0])

    def combinator(self, meta, children):
        keyword, body, shortcut = children
        return ast.make(ast.Combinator, span=self._span(meta), keyword=str(keyword), body=body, shortcut=shortcut)

    def shortcut(self, meta, children):
        return children[0]

    def from_(self, meta, children):
        return ast.make(ast.From, span=self._span(meta), name=str(children[0]))

    def from_slice(self, meta, children):
        name, start, stop = children
        return ast.From(span=self._span(meta), name=str(name), sliced=True, start=start, stop=stop)

    def tap_stmt(self, meta, children):
        return ast.make(ast.Tap, span=self._span(meta), name=str(children[0]))

    def arg_list(self, meta, children):
        return [c for c in children if c is not None]

    def positional_arg(self, meta, children):
        return ast.make(ast.Arg, span=self._span(meta), name=None, value=children[0])

    def keyword_arg(self, meta, children):
        name, value = children
        return ast.make(ast.Arg, span=self._tok_span(name), name=str(name), value=value)

    # ---- expressions
    def cond_expr(self, meta, children):
        test, then, orelse = children
        return ast.make(ast.Cond, span=self._span(meta), test=test, then=then, orelse=orelse)

    def _binary(self, meta, left, op, right):
        return ast.make(ast.Binary, span=self._span(meta), op=op, left=left, right=right)

    def or_op(self, meta, children):
        return self._binary(meta, children[0], "or", children[1])

    def and_op(self, meta, children):
        return self._binary(meta, children[0], "and", children[1])

    def not_op(self, meta, children):
        return ast.make(ast.Unary, span=self._span(meta), op="not", operand=children[0])

    def compare_op(self, meta, children):
        return self._binary(meta, children[0], str(children[1]), children[2])

    def binary_op(self, meta, children):
        return self._binary(meta, children[0], str(children[1]), children[2])

    def pow_op(self, meta, children):
        return self._binary(meta, children[0], "**", children[2])

    def neg_op(self, meta, children):
        return ast.make(ast.Unary, span=self._span(meta), op="-", operand=children[0])

    def index_expr(self, meta, children):
        return ast.make(ast.Index, span=self._span(meta), value=children[0], index=children[1])

    def slice_expr(self, meta, children):
        value, start, stop = children
        return ast.make(ast.Slice, span=self._span(meta), value=value, start=start, stop=stop)

    def attr_expr(self, meta, children):
        return ast.make(ast.Attr, span=self._span(meta), value=children[0], attr=str(children[1]))

    def call_expr(self, meta, children):
        func, *args = children
        return ast.make(ast.CallExpr, span=self._span(meta), func=func, args=[a for a in args if a is not None])

    def int_lit(self, meta, children):
        digits = str(children[0]).replace("_", "")
        bits = _INT_BITS  # what arithmetic may produce; a literal may not exceed it either
        if len(digits) > bits or int(digits).bit_length() > bits:  # (more digits than bits: too many for sure)
            raise SyntaxError_(f"integer literal of {len(digits):,} digits is too large", self._span(meta),
                               f"integers are limited to {bits} bits")
        return ast.make(ast.Literal, span=self._span(meta), value=int(digits))

    def float_lit(self, meta, children):
        return ast.make(ast.Literal, span=self._span(meta), value=float(children[0]))

    def string_lit(self, meta, children):
        return ast.make(ast.Literal, span=self._span(meta), value=_unquote(children[0]))

    def true_lit(self, meta, children):
        return ast.make(ast.Literal, span=self._span(meta), value=True)

    def false_lit(self, meta, children):
        return ast.make(ast.Literal, span=self._span(meta), value=False)

    def none_lit(self, meta, children):
        return ast.make(ast.Literal, span=self._span(meta), value=None)

    def name_ref(self, meta, children):
        return ast.make(ast.Name, span=self._span(meta), name=str(children[0]))

    def input_ref(self, meta, children):
        return ast.make(ast.InputRef, span=self._span(meta))

    def list_expr(self, meta, children):
        return ast.make(ast.ListExpr, span=self._span(meta), items=[c for c in children if c is not None])

    def dict_expr(self, meta, children):
        return ast.make(ast.DictExpr, span=self._span(meta), items=[c for c in children if c is not None])

    def dict_item(self, meta, children):
        return (children[0], children[1])

    def comp_for(self, meta, children):
        *targets, iterable, condition = children
        return [str(t) for t in targets], iterable, condition

    def list_comp(self, meta, children):
        element, (targets, iterable, condition) = children
        return ast.make(ast.Comprehension, span=self._span(meta), element=element, key=None, targets=targets,
                                 iterable=iterable, condition=condition)

    def dict_comp(self, meta, children):
        (key, element), (targets, iterable, condition) = children
        return ast.make(ast.Comprehension, span=self._span(meta), element=element, key=key, targets=targets,
                                 iterable=iterable, condition=condition)


def _template(text: str, span: Span) -> list:
    """`"stage{i + 1}"`'s parts: literal text and the expressions in braces (reported at `span`)."""
    parts: list = []
    position = 0
    for match in _TEMPLATE_PART.finditer(text):
        if match.start() > position:
            parts.append(text[position:match.start()])
        parts.append(parse_expr(match.group(1), span))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return parts


def _unquote(token) -> str:
    raw = str(token)[1:-1]
    return re.sub(r"\\(.)", r"\1", raw)
