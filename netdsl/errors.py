"""Errors: one root class, formatted like a compiler's diagnostics.

Every stage raises a subclass of `NetDSLError` carrying a source `Span`, the chain of block
instantiations that led there and an optional hint; `format()` renders
`file:line:col: error: ...`, the source line with a caret, the context and the hint.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .limits import SOURCE_BYTES


@dataclass(frozen=True)
class Span:
    """A region of a source file (1-based line and column)."""

    file: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Frame:
    """One block instantiation on the way to an error: `in block 'b' (def), instantiated at call`."""

    block: str
    definition: Span
    call: Span
    path: str  # module path of the instance, e.g. "layer3.17"

    def __str__(self) -> str:
        path = self.path if len(self.path) <= 60 else f"...{self.path[-57:]}"
        where = f", module {path}" if path else ""
        return (
            f"in block '{self.block}' ({_short(self.definition)}), "
            f"instantiated at {_short(self.call)}{where}"
        )


def _short(span: Span) -> str:
    return f"{Path(span.file).name}:{span.line}"


# Source text of files seen so far, so diagnostics can quote lines without re-reading disk.
_SOURCES: dict[str, str] = {}


def remember_source(file: str, text: str) -> None:
    _SOURCES[file] = text


MAX_FRAMES = 8  # instantiation frames printed in full
MAX_QUOTE = 100  # characters of a source line quoted under a diagnostic


@dataclass
class NetDSLError(Exception):
    """Root of every error netdsl reports about its input."""

    message: str
    span: Span | None = None
    hint: str | None = None
    trace: tuple[Frame, ...] = field(default=())
    also: tuple["NetDSLError", ...] = field(default=(), repr=False)  # more errors found with this one
    notes: tuple[tuple[str, Span], ...] = ()  # related places: ("'(' opened here", span), quoted below the hint

    kind = "error"

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        location = f"{self.span}: " if self.span else ""
        lines = [f"{location}error: {self.message}"]
        quoted = _quote(self.span) if self.span else None
        if quoted:
            lines.extend(quoted)
        frames = list(reversed(self.trace))
        if len(frames) > MAX_FRAMES:  # deep recursion: the innermost and outermost frames tell the story
            hidden = len(frames) - MAX_FRAMES + 1
            frames = frames[:MAX_FRAMES // 2] + [f"... {hidden} more instantiations ..."] + frames[-(MAX_FRAMES // 2 - 1):]
        for frame in frames:
            lines.append(f"  {frame}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        for note, where in self.notes:
            lines.append(f"  note: {note}, at {where}")
            lines.extend(_quote(where) or [])
        for other in self.also:
            lines.append(other.format())
        if self.also:
            lines.append(f"{len(self.also) + 1} errors")
        return "\n".join(lines)


def source_line(span: Span) -> str | None:
    """The text of the line `span` starts on, if the file can be found."""
    text = _SOURCES.get(span.file)
    if text is None:  # only a .net source is quoted: never a device, a FIFO or what a link points to elsewhere
        path = Path(span.file)
        try:
            status = path.stat()
            if path.resolve().suffix != ".net" or not stat.S_ISREG(status.st_mode) or status.st_size > SOURCE_BYTES:
                return None
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    source_lines = text.splitlines()
    return source_lines[span.line - 1] if 1 <= span.line <= len(source_lines) else None


def span_text(span: Span) -> str | None:
    """The source text a one-line span covers."""
    line = source_line(span)
    if line is None or span.end_line != span.line or not span.end_column:
        return None
    return line[span.column - 1:span.end_column - 1]


def _quote(span: Span) -> list[str] | None:
    line = source_line(span)
    if line is None:
        return None
    source = line.expandtabs(1)
    gutter = f"{span.line:5d} | "
    width = 1
    if span.end_line == span.line and span.end_column and span.end_column > span.column:
        width = span.end_column - span.column
    column = span.column
    if len(source) > MAX_QUOTE:  # a long line: a window around the column
        start = max(0, column - 1 - MAX_QUOTE // 2)
        source = ("..." if start else "") + source[start:start + MAX_QUOTE] + (
            "..." if start + MAX_QUOTE < len(source) else "")
        column = column - start + (3 if start else 0)
    width = max(1, min(width, len(source) - column + 1))
    caret = " " * (column - 1) + "^" + "~" * (width - 1)
    return [gutter + source, " " * (len(gutter) - 2) + "| " + caret]


class SyntaxError_(NetDSLError):
    """The text is not a well-formed .net program."""


class NameError_(NetDSLError):
    """An undefined or misspelled name: variable, block, layer, parameter, import."""


class ShapeError(NetDSLError):
    """Tensor shapes that do not fit together."""


class TypeError_(NetDSLError):
    """A value of the wrong type: an argument, an operand, an index."""


class ParameterError(NetDSLError):
    """A layer or block argument with an invalid value (e.g. channels not divisible by groups)."""


class ImportError_(NetDSLError):
    """A missing or cyclic import."""


class OutputError(NetDSLError):
    """An output file that cannot or must not be written: not a regular file, one of the network's
    own sources, in a missing directory (`netdsl.fileio`)."""


_ARGUMENT = re.compile(r"\{(\w+)(?:=(\w+))?\}")  # `{dtype}`, `{dtype=float16}` in an OptionError template


@dataclass
class OptionError(NetDSLError, ValueError):
    """Arguments that do not go together, or a format whose exporter is not installed (at the
    command line a usage error, exit 2). Still a `ValueError`, as it was before it joined NetDSLError.

    `OptionError.naming(template)` writes each argument the message names in braces, `{dtype}`,
    or with a value, `{dtype=float16}`: `message` spells them as Python keyword arguments
    (`dtype`, `dtype='float16'`) and `worded(spell)` as another front end does (the CLI's
    `--dtype`, `--dtype float16`). Made directly, `OptionError(message)` names no argument."""

    template: str | None = None

    @classmethod
    def naming(cls, template: str) -> "OptionError":
        return cls(_spell(template, lambda name, value: name if value is None else f"{name}={value!r}"),
                   template=template)

    def worded(self, spell: Callable[[str, str | None], str]) -> str:
        """The message with each argument spelled `spell(name, value or None)`."""
        return self.message if self.template is None else _spell(self.template, spell)


def _spell(template: str, spell: Callable[[str, str | None], str]) -> str:
    return _ARGUMENT.sub(lambda match: spell(match[1], match[2]), template)


# Public, Python-friendly aliases (the trailing underscore avoids shadowing builtins inside the package).
NetDSLSyntaxError = SyntaxError_
NetDSLNameError = NameError_
NetDSLTypeError = TypeError_
NetDSLImportError = ImportError_


def did_you_mean(name: str, candidates) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
