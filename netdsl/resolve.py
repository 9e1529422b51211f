"""Stage 2 — resolve: a .net file path → `Program`, every declaration it can see and the files read.

Loads the file and, transitively, its imports (relative to the importing file, then the
standard library shipped in `netdsl/std/`, then each directory of `NETDSL_PATH`), rejects
missing and cyclic imports and duplicate definitions, and picks the file's network. Tolerant,
it loads what it can and raises nothing, for `--watch` and the language server.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .errors import ImportError_, NameError_, NetDSLError, Span, did_you_mean
from .fileio import kind_of
from .layers import REGISTRY
from .limits import SOURCE_BYTES
from .parse import parse, reserved, without_collection

STDLIB = Path(__file__).resolve().parent / "std"
MAX_IMPORT_DEPTH = 64


@dataclass
class Program:
    main_file: str
    decls: dict[str, ast.Decl] = field(default_factory=dict)
    own: list[ast.Decl] = field(default_factory=list)  # declared in the main file itself
    files: list[Path] = field(default_factory=list)  # resolved, in load order: the main file first

    @property
    def networks(self) -> list[ast.Decl]:
        """The networks and variants the main file declares, in order."""
        return [d for d in self.own if isinstance(d, (ast.NetworkDef, ast.VariantDef))]

    def network(self, name: str | None = None) -> ast.Decl:
        """The network to build: `name`, or the one network the main file declares."""
        networks = self.networks
        if name is not None:
            decl = self.decls.get(name)
            if not isinstance(decl, (ast.NetworkDef, ast.VariantDef)):
                known = [d.name for d in self.decls.values() if isinstance(d, (ast.NetworkDef, ast.VariantDef))]
                raise NameError_(f"no network named '{name}' in {self.main_file}", hint=did_you_mean(name, known))
            return decl
        if not networks:
            raise NameError_(
                "this file declares no network",
                Span(self.main_file, 1, 1),
                hint="add 'network NAME { input [3, 224, 224] ... }', or a variant 'network NAME = base(...)'",
            )
        if len(networks) > 1:
            names = ", ".join(d.name for d in networks)
            raise NameError_(
                f"this file declares {len(networks)} networks ({names})",
                networks[1].span,
                hint="choose one with --network NAME",
            )
        return networks[0]


def search_path() -> list[Path]:
    return [Path(p) for p in os.environ.get("NETDSL_PATH", "").split(os.pathsep) if p]


def load(path: str | os.PathLike, source: str | None = None, *, tolerant: bool = False) -> Program:
    """Parse `path` (or `source`, named `path`) and everything it imports.

    `tolerant` never raises: a file that cannot be read or does not parse is still listed in
    `files` (its imports are not followed), and a missing or cyclic import and a declaration that
    cannot be added (a duplicate, a reserved name) are skipped."""
    main = str(path)
    program = Program(main_file=main)
    with without_collection():
        _Loader(program, tolerant).load(main, source, stack=(), is_main=True)
    return program


class _Loader:
    def __init__(self, program: Program, tolerant: bool):
        self.program = program
        self.tolerant = tolerant
        self.seen: set[Path] = set()

    def refuse(self, error: NetDSLError) -> None:
        if not self.tolerant:
            raise error

    def load(self, file: str, source: str | None, stack: tuple[Path, ...], is_main: bool = False,
             at: Span | None = None) -> None:
        resolved = Path(file).resolve()
        if resolved in stack:
            chain = " -> ".join(p.name for p in stack[stack.index(resolved):] + (resolved,))
            self.refuse(ImportError_(f"import cycle: {chain}", at,
                                     hint="move the shared blocks into a file both can import"))
            return
        if resolved in self.seen:
            return
        if len(stack) > MAX_IMPORT_DEPTH:
            self.refuse(ImportError_(f"imports nested more than {MAX_IMPORT_DEPTH} deep", at))
            return
        self.seen.add(resolved)
        self.program.files.append(resolved)
        try:
            tree = parse(read_source(file, at) if source is None else source, file)
        except NetDSLError as error:  # tolerant: the file is still listed, to be watched until it parses
            self.refuse(error)
            return
        for imp in tree.imports:
            try:
                target = find_import(imp, file)
            except NetDSLError as error:
                self.refuse(error)
                continue
            self.load(str(target), None, stack + (resolved,), at=imp.span)
        for decl in tree.decls:
            problem = self.unusable(decl)
            if problem is not None:
                self.refuse(problem)
                continue
            self.program.decls[decl.name] = decl
            if is_main:
                self.program.own.append(decl)

    def unusable(self, decl: ast.Decl) -> NetDSLError | None:
        """Why `decl` cannot join the program's declarations, if it cannot."""
        if decl.name in REGISTRY:
            return NameError_(f"'{decl.name}' is a built-in layer; a block or network cannot take its name",
                              decl.span, f"rename it, e.g. '{decl.name}_block'")
        if (error := reserved(decl.name, decl.span)) is not None:
            return error
        previous = self.program.decls.get(decl.name)
        if previous is not None:
            return NameError_(f"'{decl.name}' is already defined at {previous.span}", decl.span,
                              hint="rename one of them")
        return None


def read_source(file: str, at: Span | None = None) -> str:
    """The UTF-8 text of `file`; a missing, unreadable, non-UTF-8 or oversized file, or one that is not a
    regular file (a FIFO, a device, a directory), is a located `NetDSLError` (at `at`, the import that names
    it, when there is one). Both the main file and every import are read here, by the same rules."""
    try:
        status = os.stat(file)
        if not stat.S_ISREG(status.st_mode):
            raise NetDSLError(f"cannot read {file}: it is {kind_of(status.st_mode)}, not a regular file",
                              at or Span(file, 1, 1))
        if status.st_size > SOURCE_BYTES:
            raise _too_large(file, at)
        with open(file, "rb") as stream:
            data = stream.read(SOURCE_BYTES + 1)
    except FileNotFoundError:
        raise NetDSLError(f"no such file: {file}", at) from None
    except (OSError, ValueError) as error:  # ValueError: a NUL in the name
        raise NetDSLError(f"cannot read {file}: {getattr(error, 'strerror', None) or error}", at) from None
    if len(data) > SOURCE_BYTES:  # it grew while being read
        raise _too_large(file, at)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[:error.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        raise NetDSLError(f"{file} is not UTF-8 text (byte 0x{data[error.start]:02x})",
                          Span(file, line, column), "save the file as UTF-8") from None


def _too_large(file: str, at: Span | None) -> NetDSLError:
    return NetDSLError(f"cannot read {file}: it is larger than {SOURCE_BYTES // 2**20} MiB, the limit for a .net file",
                       at or Span(file, 1, 1), "split it into files that import each other")


def find_import(imp: ast.Import, importer: str) -> Path:
    """The real path (symbolic links resolved) of the file an `import` in the file `importer` names (see
    the search order above); an `ImportError_` when there is none, when what it names is not a regular
    .net file, and when a `std/...` import leaves the standard library."""
    relative = Path(imp.path)
    if relative.is_absolute() or relative.suffix != ".net":
        raise ImportError_(
            f"cannot import '{imp.path}': imports are relative paths to .net files", imp.span,
            "write the path relative to this file, or add its directory to NETDSL_PATH",
        )
    if imp.path.startswith("std/"):  # the standard library, and only it
        candidates, within = [STDLIB / relative.relative_to("std")], STDLIB.resolve()
    else:
        candidates = [Path(importer).resolve().parent / relative] + [directory / relative for directory in search_path()]
        within = None
    for candidate in candidates:
        try:
            status = candidate.stat()
            real = candidate.resolve()
        except (OSError, ValueError):  # missing, a name too long for the file system, a NUL in it: none to import
            continue
        if within is not None and not real.is_relative_to(within):
            raise ImportError_(f"cannot import '{imp.path}': it leads out of the standard library", imp.span,
                               "'std/...' names a file of the standard library; import other files by their own path")
        if real.suffix != ".net":
            raise ImportError_(f"cannot import '{imp.path}': it is a link to a file that is not a .net file",
                               imp.span)
        if not stat.S_ISREG(status.st_mode):
            raise ImportError_(f"cannot import '{imp.path}': it is {kind_of(status.st_mode)}, not a regular file",
                               imp.span)
        return real
    searched = ", ".join(str(c.parent) for c in candidates)
    raise ImportError_(
        f"cannot find '{imp.path}' (searched {searched})",
        imp.span,
        hint="paths are relative to the importing file; 'std/...' is the standard library; "
             "add directories to NETDSL_PATH",
    )
