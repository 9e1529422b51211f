"""The formatter: .net source text → the same program in the canonical layout (`format_source`,
for `netdsl fmt` and the language server; this module reads and writes no files).

The formatter lays out the token stream of a parse rather than printing the AST, so every
comment stays exactly where it was relative to the code; the text it produces must parse to the
same AST, with the same comments between the same tokens, or it is refused.
"""

# NOTE: [Canonical layout]
# The output depends only on the tokens, the comments and where the author broke lines, never on
# the author's spaces, so formatting is idempotent: fmt(fmt(x)) == fmt(x).
# - Line breaks are the author's: statements stay on the lines they were written on, long
#   argument lists and tables keep their rows. At most one blank line in a row; none at the start
#   or end of the file, just after an opening bracket or just before a closing one.
# - Indentation: 2 spaces per `{ }` body. Inside brackets, a line continues at the column just
#   after the opening bracket when something follows it on the same line (`f(a,` / `  b)`),
#   else 2 spaces deeper than the line that opened it. A closing bracket that starts a line goes
#   back to the indentation of the line that opened it. A line starting with `->` lines up with
#   the chain's first `->`; `else`, `elif` and `shortcut` line up with their statement; any other
#   continuation of a statement is indented 2 more than the statement.
# - Spaces: one around binary operators, `=` in `let` and `->`; none inside brackets, around
#   `=` in parameters and keyword arguments, around `.`, before `,` and `:`, after unary `-`, or
#   inside a slice; one after `,` and after `:` in labels and dicts. `{ a }` for bodies, `{a: b}`
#   for dicts. Two spaces between statements that share a line, and before a trailing comment.
# - Columns: within a paragraph (lines between blank lines and comment-only lines), trailing
#   comments start in one column, two spaces after the longest code that has one; so do the
#   second, third, ... statements of the lines of one body (`conv(64, 11)    relu`). Where a
#   line is more than OUTLIER columns longer than the next-longest, the shorter lines take a
#   column of their own, so that one long line does not push every comment far right.

from __future__ import annotations

import difflib
import functools
import itertools
from dataclasses import dataclass, field

from lark import Lark, Token, Tree

from . import ast, parse
from .errors import NetDSLError, Span, SyntaxError_

INDENT = 2  # spaces per body level, and for a continuation line
GAP = 2  # spaces before a trailing comment and between statements sharing a line
OUTLIER = 36  # a line this much longer than the next-longest gets a column of its own

_CLOSERS = frozenset(")]}")
_CALL_PARENS = frozenset({"arg_list", "param_list", "call_expr"})
_TIGHT_EQUALS = frozenset({"param", "keyword_arg"})
_ALIGN_WITH_STATEMENT = frozenset({"else", "elif", "shortcut"})


class FormatterBug(RuntimeError):
    """The formatted text would not mean what the original meant: refused (a bug in netdsl)."""


# ---- tokens, with their place in the grammar ------------------------------------------------

@dataclass
class _Tok:
    text: str
    kind: str  # the lark terminal type; "COMMENT" for a comment
    pos: int  # offset in the source
    line: int  # 1-based source line (no token spans lines)
    rule: str = ""  # the grammar rule the token is a direct child of
    statement: int = -1  # innermost statement (or top-level item) holding the token
    chain: int = -1  # for `->`: its chain statement
    body: int = 0  # for the `{` and `}` of a body (not of a dict): the body's id
    starts: bool = False  # the first token of its statement
    ends: bool = False  # the last token of a statement

    @property
    def comment(self) -> bool:
        return self.kind == "COMMENT"


def _layout_parser() -> Lark:
    """The language's own grammar, but keeping the punctuation and keywords `parse` drops."""
    return _build_layout_parser(parse.grammar_text())


@functools.lru_cache(maxsize=8)
def _build_layout_parser(grammar: str) -> Lark:
    return Lark(grammar, parser="lalr", keep_all_tokens=True, maybe_placeholders=False)


def _code_tokens(tree: Tree) -> tuple[list[_Tok], dict[int, int]]:
    """Every token of the parse in source order, annotated from the rules around it, and the
    body each statement belongs to (0: the file itself). Iterative: with its parentheses kept,
    the tree of `((((x))))` is as deep as the nesting."""
    tokens: list[_Tok] = []
    home: dict[int, int] = {}
    first: dict[int, int] = {}  # statement -> index of its first token
    ids = itertools.count(1)
    work: list[tuple] = [("tree", tree, -1, 0, -1)]
    while work:
        kind, *item = work.pop()
        if kind == "begin":
            first[item[0]] = len(tokens)
        elif kind == "end":
            tokens[first[item[0]]].starts = tokens[-1].ends = True
        elif kind == "token":
            tokens.append(_Tok(*item))
        else:
            node, statement, body, chain = item
            if node.data == "body":
                body = next(ids)
            elif node.data == "chain_stmt":
                chain = next(ids)
            pending: list[tuple] = []
            for child in node.children:
                if isinstance(child, Token):
                    pending.append(("token", str(child), child.type, child.start_pos, child.line, node.data,
                                    statement, chain if child.type == "ARROW" else -1,
                                    body if node.data == "body" else 0))
                elif node.data in ("body", "start"):  # a statement, or a top-level item
                    inner = next(ids)
                    home[inner] = body if node.data == "body" else 0
                    pending += [("begin", inner), ("tree", child, inner, body, -1), ("end", inner)]
                else:
                    pending.append(("tree", child, statement, body, chain))
            work += reversed(pending)
    return tokens, home


def _tokens(text: str) -> tuple[list[_Tok], dict[int, int]]:
    """Code tokens and comments in source order, and each statement's body.
    Between two code tokens there is only white space and comments, so each '#' there
    starts a comment that runs to the end of its line."""
    code, home = _code_tokens(_layout_parser().parse(text))
    merged: list[_Tok] = []
    end, line = 0, 1
    for token in code + [None]:
        gap = text[end:token.pos if token else len(text)]
        offset = 0
        while (start := gap.find("#", offset)) >= 0:
            stop = gap.find("\n", start)
            stop = len(gap) if stop < 0 else stop
            merged.append(_Tok(gap[start:stop].rstrip(), "COMMENT", end + start,
                               line + gap.count("\n", 0, start)))
            offset = stop
        if token is not None:
            merged.append(token)
            end, line = token.pos + len(token.text), token.line
    return merged, home


# ---- layout --------------------------------------------------------------------------------

@dataclass
class _Cell:
    """A run of a line's text that may be moved right to line up with its neighbours."""

    text: str
    kind: str  # "code" (the line's start), "statement" (one sharing the line) or "comment"
    gap: int = 0  # spaces before it


@dataclass
class _Line:
    indent: int
    base: int  # what a body opened on this line is indented from: the line's own indentation,
    #            or, for a line inside brackets, that of the line that opened them
    blank_before: bool
    body: int  # the innermost body open where the line starts (0: the file)
    cells: list[_Cell] = field(default_factory=list)
    closed: bool = False  # nothing on later lines depends on the columns of this one
    opened: int = 0  # brackets opened on this line and still open

    @property
    def comment_only(self) -> bool:
        return self.cells[0].kind == "comment"

    def width(self, cells: int | None = None) -> int:
        """Width of the line's first `cells` cells (all by default), indentation included."""
        return self.indent + sum(cell.gap + len(cell.text) for cell in self.cells[:cells])

    def render(self) -> str:
        return " " * self.indent + "".join(" " * cell.gap + cell.text for cell in self.cells)


@dataclass
class _Open:
    """An open bracket: where the lines inside it start, and where its closer goes."""

    child: int
    close: int
    body: int  # for a body's `{`: the body's id; else 0
    token: int  # index of the opening token
    line: int  # index of the output line it was opened on


def _space(a: _Tok, b: _Tok) -> int:
    """Spaces between two code tokens on one line."""
    if b.starts and not (a.body and a.text == "{"):
        return GAP  # statements sharing a line
    if a.text in ("(", "[") or b.text in (")", "]", ","):
        return 0
    if (a.text == "{" and (not a.body or b.text == "}")) or (b.text == "}" and not b.body):
        return 0  # dict braces, and an empty body
    if (b.text == "(" and b.rule in _CALL_PARENS) or (b.text == "[" and b.rule in ("index_expr", "slice_expr", "from_slice")):
        return 0
    if b.text == "." and a.kind != "INT":  # `1 .x` would read as the number `1.` and a name
        return 0
    if a.text == "." or b.text == ":" or (a.text == ":" and a.rule in ("slice_expr", "from_slice")):
        return 0
    if "=" in (a.text, b.text) and (a.rule if a.text == "=" else b.rule) in _TIGHT_EQUALS:
        return 0
    if a.text == "-" and a.rule == "neg_op":
        return 0
    return 1


class _Layout:
    """Places tokens on the author's lines with canonical indentation and spacing."""

    def __init__(self, tokens: list[_Tok], home: dict[int, int]):
        self.tokens, self.home = tokens, home
        self.lines: list[_Line] = []
        self.stack: list[_Open] = []
        self.arrow_column: dict[int, int] = {}  # chain -> column of its first `->`
        self.statement_column: dict[int, int] = {}
        self.statement_token: dict[int, int] = {}  # statement -> index of its first token

    def run(self) -> list[_Line]:
        previous: _Tok | None = None
        last_code: _Tok | None = None
        for index, token in enumerate(self.tokens):
            if previous is None or token.line > previous.line:
                self._finish(last_code)
                self._new_line(token, previous, last_code)
            elif token.comment:
                self.lines[-1].cells.append(_Cell(token.text, "comment", GAP))
            else:
                self._append(token, last_code)
            if not token.comment:
                self._place(index, token)
                last_code = token
            previous = token
        self._finish(last_code)
        return self.lines

    def _new_line(self, token: _Tok, previous: _Tok | None, last_code: _Tok | None) -> None:
        blank = previous is not None and token.line - previous.line > 1
        if blank and last_code is not None and self.lines[-1].opened and last_code.text in ("(", "[", "{"):
            blank = False  # not just inside an opening bracket ...
        if not token.comment and token.text in _CLOSERS:
            blank = False  # ... nor just before a closing one
        top = self.stack[-1] if self.stack else None
        body = next((open_.body for open_ in reversed(self.stack) if open_.body), 0)
        indent = self._indent(token, top)
        inherit = top is not None and not top.body and not token.comment
        line = _Line(indent, self.lines[top.line].base if inherit else indent, blank, body)
        line.cells.append(_Cell(token.text, "comment" if token.comment else "code"))
        self.lines.append(line)

    def _indent(self, token: _Tok, top: _Open | None) -> int:
        inside = top.child if top else 0
        if token.comment or token.starts:
            return inside
        if token.text in _CLOSERS:
            return top.close
        if token.chain in self.arrow_column:
            return self.arrow_column[token.chain]
        if token.text in _ALIGN_WITH_STATEMENT and token.rule in ("elif_clause", "else_clause", "shortcut"):
            return self.statement_column[token.statement]
        if top is not None and top.token > self.statement_token[token.statement]:
            return inside  # inside a bracket this statement opened
        return self.statement_column[token.statement] + INDENT

    def _append(self, token: _Tok, last_code: _Tok) -> None:
        line = self.lines[-1]
        gap = _space(last_code, token)
        if token.starts and self.home[token.statement] == line.body:
            line.cells.append(_Cell(token.text, "statement", gap))
        else:
            line.cells[-1].text += " " * gap + token.text

    def _place(self, index: int, token: _Tok) -> None:
        """Record where a code token landed: bracket, statement and chain columns."""
        line = self.lines[-1]
        end = line.width()
        column = end - len(token.text)
        if token.starts:
            self.statement_column[token.statement] = column
            self.statement_token[token.statement] = index
        if token.chain >= 0:
            self.arrow_column.setdefault(token.chain, column)
        if token.text in _CLOSERS and self.stack:
            if self.stack.pop().line == len(self.lines) - 1:
                line.opened -= 1
        elif token.text in ("(", "[", "{"):
            after = self.tokens[index + 1] if index + 1 < len(self.tokens) else None
            close = line.base if token.body else line.indent
            if after is not None and not after.comment and after.line == token.line:
                child = end + _space(token, after)  # line up with what follows the bracket
            else:
                child = close + INDENT
            self.stack.append(_Open(child, close, token.body, index, len(self.lines) - 1))
            line.opened += 1

    def _finish(self, last_code: _Tok | None) -> None:
        if self.lines:
            line = self.lines[-1]
            line.closed = bool(last_code and last_code.ends and not line.opened)


def _paragraphs(lines: list[_Line]) -> list[list[_Line]]:
    paragraphs: list[list[_Line]] = []
    current: list[_Line] = []
    for line in lines:
        if line.blank_before or line.comment_only:
            if current:
                paragraphs.append(current)
            current = []
        if not line.comment_only:
            current.append(line)
    if current:
        paragraphs.append(current)
    return paragraphs


def _line_up(cells: list[tuple[_Line, int]]) -> None:
    """Move the given cells right into shared columns, each two spaces after the longest text
    before its cells. Sorted by where that text ends, lines share a column until the next
    shorter one ends more than OUTLIER columns earlier: a far longer line does not drag the
    comments of the others along."""
    starts = [line.width(index) + GAP for line, index in cells]
    column: dict[int, int] = {}
    previous = 0
    for start in sorted(set(starts), reverse=True):
        column[start] = column[previous] if previous and previous - start <= OUTLIER else start
        previous = start
    for (line, index), start in zip(cells, starts):
        line.cells[index].gap = GAP + column[start] - start


def _align(lines: list[_Line]) -> None:
    for paragraph in _paragraphs(lines):
        for body in dict.fromkeys(line.body for line in paragraph):
            rows = [line for line in paragraph if line.body == body and line.closed]
            index = 1
            while group := [(line, index) for line in rows
                            if len(line.cells) > index and line.cells[index].kind == "statement"]:
                _line_up(group)
                index += 1
        _line_up([(line, len(line.cells) - 1) for line in paragraph
                  if len(line.cells) > 1 and line.cells[-1].kind == "comment"])


def _render(lines: list[_Line]) -> str:
    out: list[str] = []
    for line in lines:
        if line.blank_before:
            out.append("")
        out.append(line.render())
    return "\n".join(out) + "\n" if out else ""


# ---- the public function and its safety net ----------------------------------------------

def format_source(text: str, filename: str = "<string>") -> str:
    """`text` in the canonical layout. Raises the parser's located `NetDSLError` when `text`
    does not parse, and `FormatterBug` when the result would not mean the same. A byte-order mark is
    dropped and line endings become LF (`parse.source_text`)."""
    text = parse.source_text(text)
    tree = parse.parse(text, filename)
    try:
        meaning = _meaning(tree)
        tokens, home = _tokens(text)
        lines = _Layout(tokens, home).run()
        _align(lines)
        result = _render(lines)
        _verify(tokens, result, meaning, filename)
    except RecursionError:
        raise SyntaxError_("the file is nested too deeply to format", Span(filename, 1, 1),
                           "flatten deeply nested groups or expressions") from None
    return result


def _verify(tokens: list[_Tok], result: str, meaning, filename: str) -> None:
    """The formatted text must parse to the same AST and hold the same tokens and comments in
    the same order, each starting a line exactly where it did before."""
    try:
        again = _meaning(parse.parse(result, f"{filename} (formatted)"))
        retokens, _ = _tokens(result)
    except NetDSLError as error:
        raise FormatterBug(f"the formatted text does not parse: {error}") from None
    if again != meaning:
        raise FormatterBug("the formatted text parses to a different program")
    if _stream(retokens) != _stream(tokens):
        raise FormatterBug("the formatted text moves a token or a comment")


def _stream(tokens: list[_Tok]) -> list[tuple[str, bool]]:
    return [(token.text, index == 0 or token.line > tokens[index - 1].line)
            for index, token in enumerate(tokens)]


_SPANS = frozenset({"span", "name_span", "base_span"})


def _meaning(value):
    """An AST without its source positions, as comparable tuples (node types included)."""
    if isinstance(value, ast.SourceFile):
        return _meaning(value.imports), _meaning(value.decls)
    if hasattr(type(value), "model_fields"):
        return type(value).__name__, tuple(
            (name, _meaning(getattr(value, name))) for name in type(value).model_fields if name not in _SPANS)
    if isinstance(value, (list, tuple)):
        return tuple(_meaning(item) for item in value)
    return type(value).__name__, value


# ---- the difference ------------------------------------------------------------------------

def unified_diff(text: str, formatted: str, name: str) -> str:
    """`netdsl fmt --diff`: a unified diff; the labels put a tab after the name, so `patch` reads
    the name alone."""
    lines = difflib.unified_diff(text.splitlines(keepends=True), formatted.splitlines(keepends=True),
                                 f"{name}\t(original)", f"{name}\t(formatted)")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
