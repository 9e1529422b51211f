"""The language server: editor buffers → diagnostics, hovers, definitions and completions.

`netdsl lsp` speaks the Language Server Protocol over stdio (pygls). Every change to an open
document re-runs the ordinary pipeline on the buffer text, on a worker thread (NOTE: [A server
that always answers]) — parse, resolve (imports relative to the document's path), check every
network the document declares — and keeps the result as an `Analysis`: the errors, exactly as `netdsl check` reports them, become diagnostics; the
checked graphs are indexed by source span, so a hover is a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import os
import re
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types
from pygls import uris
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument

from . import __version__, ast
from .check import check_program
from .errors import NetDSLError, Span, span_text
from .combinators import COMBINATORS
from .cost import analyse as analyse_costs
from .facts import Facts, instances
from .graph import Network
from .layers import REGISTRY, signature
from .limits import SOURCE_BYTES
from .parse import keywords, parse
from .resolve import Program, find_import, load
from .scopes import unresolved
from .text import human, shape_text
from .values import BUILTINS, show
from .watch import dependencies

SpanKey = tuple[str, int, int, int, int]


@functools.lru_cache(maxsize=1024)
def _real(file: str) -> str:
    return os.path.realpath(file)


def _key(span: Span) -> SpanKey:
    """Spans from the checker and from a fresh parse name files differently (relative, resolved);
    keys compare them by real path."""
    return (_real(span.file), span.line, span.column, span.end_line or 0, span.end_column or 0)


# ---- what the cursor can point at ---------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """A stretch of the document the server can say something about."""

    span: Span
    decl: ast.Decl | None = field(repr=False)  # the declaration it sits in (for local names)
    keys: tuple[SpanKey, ...] = ()  # graph nodes instantiated from here, tried in order
    name: str | None = None  # a name it refers to: definition, signature
    label: str | None = None  # the layer statement's label, for the hover's title
    combinator: str | None = None  # the keyword of a `residual { }` region; "{" for a group, "from", "tap"
    network: str | None = None  # a network whose summary the hover shows
    import_path: str | None = None  # an import's path as written

    def contains(self, line: int, column: int) -> bool:
        end = (self.span.end_line or self.span.line, self.span.end_column or self.span.column + 1)
        return (self.span.line, self.span.column) <= (line, column) < end

    @property
    def size(self) -> tuple[int, int]:
        end_line = self.span.end_line or self.span.line
        end_column = self.span.end_column or self.span.column + 1
        return (end_line - self.span.line, end_column - self.span.column if end_line == self.span.line else end_column)


def _keyword(node: ast.Node) -> str | None:
    """The keyword a unit starts with, for the units that start with one."""
    if isinstance(node, ast.Combinator):
        return node.keyword
    return {ast.Group: "{", ast.From: "from"}.get(type(node))


def _prefix(span: Span, length: int) -> Span:
    return Span(span.file, span.line, span.column, span.line, span.column + length)


def regions(tree: ast.SourceFile) -> list[Region]:
    """Every hoverable stretch of a parsed file."""
    found = [Region(imp.span, None, import_path=imp.path) for imp in tree.imports]
    for decl in tree.decls:
        for node in ast.walk(decl):
            found.extend(_regions_of(node, decl))
    return found


def _regions_of(node: ast.Node, decl: ast.Decl) -> list[Region]:
    if isinstance(node, ast.LayerStmt) and node.label is not None:
        callee = node.unit.name if isinstance(node.unit, ast.Call) else None
        label = node.label.parts[0] if node.label.is_plain else span_text(node.label.span)
        return [Region(node.label.span, decl, (_key(node.span), _key(node.unit.span)), callee, label)]
    if isinstance(node, ast.Call):
        return [Region(node.span, decl, (_key(node.span),)),
                Region(node.name_span, decl, (_key(node.span),), node.name)]
    keyword = _keyword(node)
    if keyword is not None:
        return [Region(_prefix(node.span, len(keyword)), decl, (_key(node.span),), label=keyword,
                       combinator=keyword)]
    if isinstance(node, ast.Tap):
        return [Region(node.span, decl, (_key(node.span),), label=f"tap {node.name}", combinator="tap")]
    if isinstance(node, ast.Name):
        return [Region(node.span, decl, name=node.name)]
    if isinstance(node, (ast.NetworkDef, ast.VariantDef)):
        found = [Region(node.span, decl, name=node.name, network=node.name)]
        if isinstance(node, ast.VariantDef):
            found.append(Region(node.base_span, decl, name=node.base, network=node.name))
        return found
    if isinstance(node, (ast.BlockDef, ast.FunctionDef)):
        return [Region(node.span, decl, name=node.name)]
    return []


# ---- the checked graphs, by source span ---------------------------------------------------

Instance = Facts  # one node of one checked network, with its module path and numbers


def index(networks: list[Network]) -> dict[SpanKey, list[Instance]]:
    table: dict[SpanKey, list[Instance]] = {}
    for network in networks:
        for instance in instances(network, analyse_costs(network)):
            table.setdefault(_key(instance.span), []).append(instance)
    return table


# ---- one analysis per document version ----------------------------------------------------

@dataclass
class Analysis:
    """What the pipeline made of one version of a document."""

    path: str
    tree: ast.SourceFile | None = None  # None: the text does not parse
    program: Program | None = None  # None: an import failed
    networks: list[Network] = field(default_factory=list)
    errors: list[NetDSLError] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    instances: dict[SpanKey, list[Instance]] = field(default_factory=dict)


def analyse(path: str, text: str) -> Analysis:
    """Parse, resolve and check `text` as the file `path`: every network the file declares is
    checked (a file of blocks only is parsed and resolved), and each failure is kept."""
    result = Analysis(path)
    try:
        result.tree = parse(text, path)
        result.regions = regions(result.tree)
        result.program = load(path, text)
    except NetDSLError as error:
        result.errors.append(error)
        return result
    result.errors.extend(unresolved(result.program))  # every branch's names, networks or not
    seen = {(error.message, error.span) for error in result.errors}
    for decl in result.program.own:
        if isinstance(decl, (ast.NetworkDef, ast.VariantDef)):
            try:
                result.networks.append(check_program(result.program, decl.name))
            except NetDSLError as error:
                if (error.message, error.span) not in seen:
                    seen.add((error.message, error.span))
                    result.errors.append(dataclasses.replace(error, also=()))
    result.instances = index(result.networks)
    return result


def region_at(analysis: Analysis, line: int, column: int) -> Region | None:
    """The smallest region under a 1-based position."""
    hits = [region for region in analysis.regions if region.contains(line, column)]
    return min(hits, key=lambda region: region.size, default=None)


# ---- diagnostics --------------------------------------------------------------------------

def _message(error: NetDSLError) -> str:
    """The CLI's diagnostic without the location line's prefix and the quoted source (the
    editor underlines the range instead): message, instantiation chain, hint."""
    text = dataclasses.replace(error, span=None, also=()).format()
    return text.removeprefix("error: ")


def place(error: NetDSLError, analysis: Analysis) -> tuple[Span, bool]:
    """Where in this document to show `error`, and whether that is somewhere else than the
    error itself: an error in an imported file goes on the innermost call from this document
    that led there, or else on the import that brings the file in."""
    here = _real(analysis.path)
    if error.span is None:
        return Span(analysis.path, 1, 1), False
    if _real(error.span.file) == here:
        return error.span, False
    for frame in reversed(error.trace):
        if _real(frame.call.file) == here:
            return frame.call, True
    target = _real(error.span.file)
    for imp in analysis.tree.imports if analysis.tree else ():
        try:
            found = find_import(imp, analysis.path)
        except NetDSLError:
            continue
        if target in {_real(str(file)) for file in dependencies(found)}:
            return imp.span, True
    return Span(analysis.path, 1, 1), True


# ---- hover text ---------------------------------------------------------------------------

MAX_ROWS = 12


def describe_instances(instances: list[Instance]) -> str:
    """One line for one instance; for several, identical ones folded: `×36 [1024, 14, 14] -> ...`."""
    if len(instances) == 1:
        instance = instances[0]
        return f"```\n{instance.counts_text()}\n```\n`{instance.network}`: `{instance.path}` ({instance.kind})"
    groups: dict[tuple, list[Instance]] = {}
    for instance in instances:
        groups.setdefault((instance.network, instance.kind, instance.counts_text()), []).append(instance)
    networks = {instance.network for instance in instances}
    lines = [f"{len(instances)} instances in {', '.join(sorted(networks))}:", "```"]
    width = max(len(str(len(group))) for group in groups.values()) + 1
    for (_, kind, counts), group in list(groups.items())[:MAX_ROWS]:
        paths = ", ".join(i.path for i in group[:2]) + (", ..." if len(group) > 2 else "")
        if len(networks) > 1:
            paths = f"{group[0].network}: {paths}"
        lines.append(f"{'x' + str(len(group)):>{width}} {kind}  {counts}  ({paths})")
    if len(groups) > MAX_ROWS:
        lines.append(f"... and {len(groups) - MAX_ROWS} more kinds of instance")
    lines.append("```")
    return "\n".join(lines)


def _doc_comment(decl: ast.Decl) -> str:
    """The `#` lines right above a declaration."""
    try:
        lines = Path(decl.span.file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    comment = []
    for line in reversed(lines[:decl.span.line - 1]):
        if not line.strip().startswith("#"):
            break
        comment.append(line.strip().lstrip("#").strip())
    return " ".join(reversed(comment))


def _params(params: list[ast.Param]) -> str:
    parts = []
    for param in params:
        default = span_text(param.default.span) if param.default is not None else None
        parts.append(param.name if param.default is None else f"{param.name}={default or '...'}")
    return ", ".join(parts)


def declaration_signature(decl: ast.Decl) -> str:
    if isinstance(decl, ast.BlockDef):
        return f"block {decl.name}({_params(decl.params)})"
    if isinstance(decl, ast.NetworkDef):
        return f"network {decl.name}({_params(decl.params)})"
    if isinstance(decl, ast.FunctionDef):
        return f"def {decl.name}({_params(decl.params)})"
    assert isinstance(decl, ast.VariantDef)
    return f"network {decl.name} = {decl.base}(...)"


def _local(decl: ast.Decl | None, name: str) -> ast.Node | None:
    """The parameter, `let`, loop variable or `tap` that defines `name` inside `decl`."""
    if decl is None:
        return None
    for param in getattr(decl, "params", None) or []:
        if param.name == name:
            return param
    found = [node for node in ast.walk(decl)
             if (isinstance(node, (ast.Let, ast.Tap)) and node.name == name)
             or (isinstance(node, ast.For) and name in node.targets)]
    return min(found, key=lambda node: (node.span.line, node.span.column), default=None)


def describe_name(name: str, decl: ast.Decl | None, program: Program | None) -> str | None:
    """What `name` means where it is used: a local, a block, a network, a layer or a function."""
    local = _local(decl, name)
    if local is not None:
        what = {ast.Param: "parameter", ast.Let: "let", ast.For: "loop variable", ast.Tap: "tensor"}[type(local)]
        return f"`{name}`: {what} of `{decl.name}` (line {local.span.line})"
    found = program.decls.get(name) if program is not None else None
    if found is not None:
        where = f"{Path(found.span.file).name}:{found.span.line}"
        comment = _doc_comment(found)
        return f"```netdsl\n{declaration_signature(found)}\n```\n{where}" + (f" — {comment}" if comment else "")
    if name in REGISTRY:
        return f"```netdsl\n{signature(REGISTRY[name])}\n```\nbuilt-in layer — {REGISTRY[name].doc}"
    if name in BUILTINS:
        return f"```netdsl\n{BUILTINS[name].signature}\n```\nbuilt-in function"
    return None


def describe_network(network: Network, decl: ast.Decl | None) -> str:
    base = f" = {decl.base}(...)" if isinstance(decl, ast.VariantDef) else ""
    arguments = ", ".join(f"{k}={show(v)}" for k, v in network.arguments.items())
    return (f"**network {network.name}**{base}\n```\n"
            f"input {shape_text(network.input_shape)} -> output {shape_text(network.output_shape)}\n"
            f"{network.params:,} parameters  {human(network.macs)} MACs\n```\n"
            + (f"arguments: {arguments}" if arguments else ""))


def hover_text(region: Region, analysis: Analysis, others: list[Analysis]) -> str | None:
    """Markdown for a hover on `region`; instances come from this document's networks, or else
    from other open documents that instantiate this file (a library opened beside its user)."""
    if region.import_path is not None:
        try:
            return f"`{find_import(ast.Import(span=region.span, path=region.import_path), analysis.path)}`"
        except NetDSLError as error:
            return error.message
    if region.network is not None:
        network = next((n for n in analysis.networks if n.name == region.network), None)
        if network is not None:
            decl = analysis.program.decls.get(region.network) if analysis.program else None
            return describe_network(network, decl)
    title = describe_name(region.name, region.decl, analysis.program) if region.name else None
    parts = [f"**{region.label}**" if region.label else None, title]
    if region.keys:
        instances = _lookup(region, [analysis] + others)
        if instances:
            parts.append(describe_instances(instances))
        elif analysis.errors:
            parts.append("(no shapes: the file has errors)")
        else:
            parts.append("(not instantiated by any network in the open files)")
    text = "\n\n".join(part for part in parts if part)
    return text or None


def _made_by(keyword: str):
    """Tests for the graph nodes a keyword's region makes: a labelled combinator's module (of the
    combinator's type; a group's: "group"), then the node itself."""
    combinator = COMBINATORS.get(keyword)
    module_type = combinator.type_name if combinator is not None else "group"
    kind = {"{": None, "from": "from_", "tap": "tap"}.get(keyword, "merge")
    return [lambda node: node.walk_kind == "module" and node.type_name == module_type,
            lambda node: node.walk_kind == kind and (kind != "merge" or node.kind == keyword)]


def _lookup(region: Region, analyses: list[Analysis]) -> list[Instance]:
    """The graph nodes made by `region`'s source: in the document's own networks, or else in
    those of every other open document (a library's users). Nodes sharing a span are told
    apart by kind: a call's layer or block (not the combinator around it), a keyword's
    combinator (not the projection a residual generates at the same place)."""
    if region.combinator is None:
        tests = [lambda node: node.walk_kind in ("layer", "module")]
    else:
        tests = _made_by(region.combinator)

    def chosen(source: Analysis) -> list[Instance]:
        for key in region.keys:
            found = source.instances.get(key, [])
            for test in tests:
                matching = [instance for instance in found if test(instance.node)]
                if matching:
                    return matching
        return []
    own, *others = analyses
    return chosen(own) or [instance for other in others for instance in chosen(other)]


# ---- definitions --------------------------------------------------------------------------

def definition(region: Region, analysis: Analysis, program: Program | None) -> Span | None:
    """Where the name under the cursor is defined: a local first, then a block or network in
    any loaded file (the language's own lookup order); an import goes to its file."""
    if region.import_path is not None:
        try:
            return Span(str(find_import(ast.Import(span=region.span, path=region.import_path), analysis.path)), 1, 1)
        except NetDSLError:
            return None
    if region.name is None:
        return None
    local = _local(region.decl, region.name)
    if local is not None:
        return local.span
    found = program.decls.get(region.name) if program is not None else None
    return found.span if found is not None else None


# ---- completion ---------------------------------------------------------------------------

_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"?|[A-Za-z_]\w*|==|!=|<=|>=|->|\*\*|//|\S')


@dataclass
class CallContext:
    callee: str  # the name before the innermost unclosed '('
    given: set[str]  # keyword arguments already written


def call_context(text: str, offset: int) -> CallContext | None:
    """The call whose parentheses enclose `offset`, read off the text itself (the buffer is
    mid-edit and rarely parses)."""
    stack: list[CallContext | None] = []
    previous: list[str] = []
    for match in _TOKEN.finditer(text, 0, offset):
        token = match.group()
        if token[0] in '#"':
            previous.clear()
            continue
        if token in "([{":
            callee = previous[-1] if token == "(" and previous and previous[-1].isidentifier() else None
            if callee is not None and len(previous) > 1 and previous[-2] in ("block", "network"):
                callee = None  # a parameter list, not a call
            stack.append(CallContext(callee, set()) if callee else None)
        elif token in ")]}":
            if stack:
                stack.pop()
        elif token == "=" and stack and stack[-1] is not None and previous and previous[-1].isidentifier():
            stack[-1].given.add(previous[-1])
        previous = (previous + [token])[-2:]
    return stack[-1] if stack else None


def _parameters(callee: str, program: Program | None) -> tuple[str, list[tuple[str, str]]]:
    """The signature of a layer, block or network, and (name, documentation) per parameter."""
    if callee in REGISTRY:
        return signature(REGISTRY[callee]), [(p.name, p.help) for p in REGISTRY[callee].params]
    decl = program.decls.get(callee) if program is not None else None
    if isinstance(decl, (ast.BlockDef, ast.NetworkDef, ast.FunctionDef)):
        return declaration_signature(decl), [(p.name, "") for p in decl.params]
    return "", []


_IMPORT = re.compile(r'^\s*import\s+"((?:[^"\\\n]|\\.)*)"', re.MULTILINE)


def imported_program(path: str, text: str) -> Program:
    """The declarations a buffer that has never parsed can see: those of the files its
    `import` lines name, each loaded on its own."""
    program = Program(path)
    for match in _IMPORT.finditer(text):
        try:
            target = find_import(ast.Import(span=Span(path, 1, 1), path=match.group(1)), path)
        except NetDSLError:
            continue
        program.decls.update(load(target, tolerant=True).decls)
    return program


def completions(text: str, offset: int, program: Program | None) -> list[types.CompletionItem]:
    """Inside a call's parentheses: its parameters first (`stride=`), then values; elsewhere:
    layers, blocks, keywords and functions."""
    items: list[types.CompletionItem] = []
    context = call_context(text, offset)
    if context is not None:
        detail, parameters = _parameters(context.callee, program)
        for name, doc in parameters:
            if name not in context.given:
                items.append(types.CompletionItem(
                    label=f"{name}=", kind=types.CompletionItemKind.Property, detail=detail,
                    documentation=doc or None, sort_text=f"0{name}", filter_text=name))
    for name, layer in sorted(REGISTRY.items()):
        items.append(types.CompletionItem(label=name, kind=types.CompletionItemKind.Function,
                                          detail=signature(layer), documentation=layer.doc, sort_text=f"1{name}"))
    for name, decl in sorted((program.decls if program is not None else {}).items()):
        kind = types.CompletionItemKind.Class if isinstance(decl, ast.BlockDef) else types.CompletionItemKind.Module
        items.append(types.CompletionItem(label=name, kind=kind, detail=declaration_signature(decl),
                                          sort_text=f"1{name}"))
    for name in sorted(BUILTINS):
        items.append(types.CompletionItem(label=name, kind=types.CompletionItemKind.Function,
                                          detail=BUILTINS[name].signature, sort_text=f"2{name}"))
    for word in sorted(keywords()):
        items.append(types.CompletionItem(label=word, kind=types.CompletionItemKind.Keyword, sort_text=f"3{word}"))
    return items


# ---- the server ---------------------------------------------------------------------------

# NOTE: [A server that always answers]
# - A request whose parameters do not fit the protocol (a negative position, a missing field) gets
#   the JSON-RPC error "invalid params"; pygls would log it and answer nothing, and an editor
#   waiting on it stalls.
# - Documents are checked off the request path, on one worker thread, newest version only: a
#   large or slow document delays its own diagnostics, never a hover or a completion. A request
#   waits at most `FRESH_SECONDS` for the check of the version it was asked about, then answers
#   from the last finished check.
# - A document larger than the limit on a .net file (`limits.SOURCE_BYTES`) is not checked at all;
#   its diagnostic says so.

FRESH_SECONDS = 2.0


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, with malformed requests answered by an error (NOTE: [A server that always answers])."""

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if isinstance(data, dict) and "id" in data and "method" in data:  # a request: it must get an answer
                self._send_response(data["id"], None, error.to_response_error())
            return _UNANSWERABLE


class _Unanswerable:
    """What a message that could not be read becomes: nothing for pygls to handle."""

    jsonrpc = "unreadable"


_UNANSWERABLE = _Unanswerable()


class NetDSLServer(LanguageServer):
    """Keeps one `Analysis` per open document, and the last program that loaded, for names
    while the buffer does not parse."""

    def __init__(self) -> None:
        super().__init__("netdsl", __version__, protocol_cls=_Protocol)
        self.analyses: dict[str, Analysis] = {}
        self.programs: dict[str, Program] = {}
        self.checker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="netdsl-check")
        self.wanted: dict[str, int] = {}  # uri -> the document version to check
        self.checks: dict[str, concurrent.futures.Future] = {}  # uri -> its latest check
        self.lock = threading.Lock()

    def path_of(self, uri: str) -> str:
        path = uris.to_fs_path(uri)
        if path is None:  # an untitled buffer: imports resolve from the workspace
            root = self.workspace.root_path or os.getcwd()
            path = os.path.join(root, "untitled.net")
        return path

    def refresh(self, uri: str) -> None:
        """Checks the document's current text on the worker thread; publishes its diagnostics when done."""
        document = self.workspace.get_text_document(uri)
        loop = asyncio.get_running_loop()
        with self.lock:
            self.wanted[uri] = document.version
        self.checks[uri] = self.checker.submit(self.check, uri, document.source, document.version, loop)

    def check(self, uri: str, text: str, version: int | None, loop: asyncio.AbstractEventLoop) -> None:
        """The worker's part: analyse `text` unless a newer version is waiting, then publish on `loop`."""
        with self.lock:
            if self.wanted.get(uri) != version:
                return  # superseded while it waited
        path = self.path_of(uri)
        if len(text.encode("utf-8", "replace")) > SOURCE_BYTES:
            analysis = Analysis(path, errors=[NetDSLError(
                f"this document is larger than {SOURCE_BYTES // 2**20} MiB, the limit for a .net file; "
                "it is not checked", Span(path, 1, 1))])
        else:
            try:
                analysis = analyse(path, text)
            except Exception:  # noqa: BLE001 - a bug in netdsl must not take the editor's server down
                loop.call_soon_threadsafe(self.window_log_message, types.LogMessageParams(
                    types.MessageType.Error, traceback.format_exc()))
                analysis = Analysis(path, errors=[NetDSLError(
                    "internal error: this is a bug in netdsl (the traceback is in the server log)")])
        loop.call_soon_threadsafe(self.publish, uri, version, analysis)

    def publish(self, uri: str, version: int | None, analysis: Analysis) -> None:
        """Records a finished check and sends its diagnostics (on the server's own thread)."""
        document = self.workspace.text_documents.get(uri)
        if document is None or self.wanted.get(uri) != version:
            return  # closed, or changed since
        self.analyses[uri] = analysis
        if analysis.program is not None:
            self.programs[uri] = analysis.program
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=version, diagnostics=self.diagnostics(analysis, document)))

    async def fresh(self, uri: str) -> None:
        """Waits (at most `FRESH_SECONDS`) for the check of the document's latest version."""
        check = self.checks.get(uri)
        if check is None or check.done():
            await asyncio.sleep(0)  # its result may be waiting on the loop to be published
            return
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(check)), FRESH_SECONDS)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - answered from the last check instead
            return
        await asyncio.sleep(0)

    def diagnostics(self, analysis: Analysis, document: TextDocument) -> list[types.Diagnostic]:
        result, seen = [], set()
        for error in analysis.errors:
            span, moved = place(error, analysis)
            message = f"{error.span}: {_message(error)}" if moved else _message(error)
            if (span, message) in seen:  # two networks failing on the same shared line
                continue
            seen.add((span, message))
            related = [types.DiagnosticRelatedInformation(self.location(error.span), f"error: {error.message}")
                       ] if moved else []
            related += [types.DiagnosticRelatedInformation(self.location(frame.call), f"instantiates '{frame.block}'")
                        for frame in reversed(error.trace)][:8]
            result.append(types.Diagnostic(
                range=self.range(span, document), message=message, severity=types.DiagnosticSeverity.Error,
                source="netdsl", related_information=related or None))
        return result

    def range(self, span: Span, document: TextDocument | None = None) -> types.Range:
        """A 1-based, code-point `Span` as an LSP range in the client's units."""
        start = types.Position(span.line - 1, span.column - 1)
        if span.end_line and span.end_column:
            end = types.Position(span.end_line - 1, span.end_column - 1)
        else:
            end = types.Position(start.line, start.character + 1)
        lines = document.lines if document is not None else _file_lines(span.file)
        if not lines or end.line >= len(lines):
            return types.Range(start, end)
        return self.workspace.position_codec.range_to_client_units(lines, types.Range(start, end))

    def location(self, span: Span) -> types.Location:
        uri = uris.from_fs_path(_real(span.file)) or span.file
        document = self.workspace.text_documents.get(uri)
        return types.Location(uri, self.range(span, document))

    def region(self, uri: str, position: types.Position) -> tuple[Region | None, Analysis | None]:
        analysis = self.analyses.get(uri)
        if analysis is None:
            return None, None
        document = self.workspace.get_text_document(uri)
        if position.line >= len(document.lines):  # past the end of the buffer: nothing there
            return None, analysis
        server = document.position_codec.position_from_client_units(document.lines, position)
        return region_at(analysis, server.line + 1, server.character + 1), analysis


def _file_lines(file: str) -> list[str]:
    try:
        return Path(file).read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return []


def _formatter():
    """`netdsl.fmt.format_source`, when this installation has the formatter."""
    try:
        from .fmt import format_source
    except ImportError:
        return None
    return format_source


def make_server() -> NetDSLServer:
    server = NetDSLServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NetDSLServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: NetDSLServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: NetDSLServer, params: types.DidSaveTextDocumentParams) -> None:
        for uri in list(ls.analyses):  # a saved file may be imported by the other open documents
            ls.refresh(uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NetDSLServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.analyses.pop(params.text_document.uri, None)
        ls.programs.pop(params.text_document.uri, None)
        with ls.lock:
            ls.wanted.pop(params.text_document.uri, None)  # a check still waiting is dropped
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(params.text_document.uri, []))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: NetDSLServer, params: types.HoverParams) -> types.Hover | None:
        uri = params.text_document.uri
        await ls.fresh(uri)
        region, analysis = ls.region(uri, params.position)
        if region is None:
            return None
        others = [a for u, a in ls.analyses.items() if u != uri]
        text = hover_text(region, analysis, others)
        if text is None:
            return None
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text),
                           ls.range(region.span, ls.workspace.get_text_document(uri)))

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    async def goto_definition(ls: NetDSLServer, params: types.DefinitionParams) -> types.Location | None:
        uri = params.text_document.uri
        await ls.fresh(uri)
        region, analysis = ls.region(uri, params.position)
        if region is None:
            return None
        span = definition(region, analysis, analysis.program or ls.programs.get(uri))
        return ls.location(span) if span is not None else None

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["(", ","]))
    async def complete(ls: NetDSLServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        await ls.fresh(uri)
        document = ls.workspace.get_text_document(uri)
        analysis = ls.analyses.get(uri)
        program = (analysis.program if analysis else None) or ls.programs.get(uri)
        if program is None:
            program = ls.programs[uri] = imported_program(ls.path_of(uri), document.source)
        items = completions(document.source, document.offset_at_position(params.position), program)
        return types.CompletionList(is_incomplete=False, items=items)

    format_source = _formatter()
    if format_source is not None:
        @server.feature(types.TEXT_DOCUMENT_FORMATTING)
        def formatting(ls: NetDSLServer, params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
            document = ls.workspace.get_text_document(params.text_document.uri)
            try:
                formatted = format_source(document.source, ls.path_of(params.text_document.uri))
            except NetDSLError:
                return None  # a buffer that does not parse is left alone; its diagnostic says why
            if formatted == document.source:
                return []
            end = types.Position(len(document.lines), 0)
            return [types.TextEdit(types.Range(types.Position(0, 0), end), formatted)]

    return server


def serve() -> None:
    """Serve one editor over stdin/stdout until it disconnects (`netdsl lsp`)."""
    server = make_server()
    # Build the parser's tables and run the checker once now, not on the first document opened.
    analyse("<start-up>.net", "network start_up { input [3, 8, 8] residual { conv(8, 3, pad=1) bn relu } }")
    server.start_io()
