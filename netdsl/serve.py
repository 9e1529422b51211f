"""`netdsl serve`: a directory of .net files → a live viewer in the browser.

A standard-library HTTP server (localhost unless told otherwise) serves the page in
`netdsl/viewer/` and, as JSON, what the pipeline makes of a file: the drawing (`draw.py`, as SVG),
what each drawn node stands for with its facts (`facts.py`, the language server's hover facts),
the summary table (`summary.py`), the valid input sizes (`sizes.py`) and `netdsl diff`'s stages
against a second file. Server-sent events tell the page when the file or anything it imports has
been saved (`watch.py`); an error comes back located, and the page keeps its last good drawing.

Routes: `/` the page; `/viewer/NAME` its script and style sheet; `/api/files` the .net files under
the directory; `/api/view?file=F[&network=N][&expand=PATH...][&collapse=PATH...]`;
`/api/view?...&legend=1` adds the drawing's legend; `/api/diff?file=F&other=G`; `/events?file=F[&other=G]`; `/files/PATH` a file's text. Only files
under the directory the server was started on are read for a request: anything else (`..`, an
absolute path, a symbolic link leading out) is refused with 403, a missing file is 404.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import os
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from . import api, draw, summary
from .cost import analyse
from .errors import NetDSLError
from .facts import instances
from .resolve import load
from .sizes import valid_inputs
from .watch import dependencies, stamps, wait_for_change

DEFAULT_PORT = 8765
POLL_SECONDS = 0.2  # how often the event stream looks at the files' modification times
KEEPALIVE_SECONDS = 10.0  # a comment line this often, so a closed page's stream is noticed
VIEWER_FILES = ("index.html", "viewer.js", "viewer.css")
LOCAL_NAMES = {"127.0.0.1", "localhost", "::1"}  # the names a page served from this machine uses

# NOTE: [One check at a time]
# The server answers requests in threads, but a view is computed under one lock: checking is
# quick (a ResNet-152 takes a quarter of a second) and the parser and caches it shares were not
# written to be used from two threads at once.
_LOCK = threading.Lock()


class Refused(Exception):
    """A request for something the viewer does not serve: the HTTP status and one line saying why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def inside(root: Path, relative: str) -> Path:
    """The file `relative` names under `root`, symbolic links followed; `Refused` (403) for a path
    that is absolute, climbs out with `..` or leads out through a link, 404 for a missing one."""
    if not relative or "\0" in relative:
        raise Refused(HTTPStatus.NOT_FOUND, "no file named")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or Path(relative).drive:
        raise Refused(HTTPStatus.FORBIDDEN, f"{relative}: an absolute path; name a file under the served directory")
    real_root = root.resolve()
    target = (real_root / relative).resolve()
    if not target.is_relative_to(real_root):
        raise Refused(HTTPStatus.FORBIDDEN, f"{relative}: outside the served directory")
    if not target.is_file():
        raise Refused(HTTPStatus.NOT_FOUND, f"{relative}: no such file")
    return target


def net_files(root: Path) -> list[str]:
    """The .net files under `root`, relative to it (hidden directories skipped)."""
    found = []
    for path in sorted(root.rglob("*.net")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            found.append(relative.as_posix())
    return found


# ---- what the page gets ---------------------------------------------------------------------

def error_json(error: NetDSLError) -> dict:
    """A located error: the compiler-style text (message, source line, caret, context, hint) and where."""
    span = error.span
    where = {"file": span.file, "line": span.line, "column": span.column} if span else None
    return {"text": error.format(), "location": where}


def view_of(path: Path, network: str | None = None, expand: tuple[str, ...] = (),
            collapse: tuple[str, ...] = (), legend: bool = False, dtype: str = "float32") -> dict:
    """A file's network as the page draws it: the SVG, what each of its nodes and clusters stands
    for (the facts of its graph nodes, and the module a click unfolds or folds), the summary table
    and the valid input sizes; or `{"error": ...}`. `network`: which, when the file declares several
    (default: the first)."""
    with _LOCK:
        try:
            names = [decl.name for decl in load(path).networks]
            checked = api.check(path, network=network or (names[0] if len(names) > 1 else None))
            costs = analyse(checked)
            depth = draw.default_depth(checked)
            dot, items = draw.drawing(checked, depth, expand, collapse, draw.Layout(legend=legend))
            svg = draw.image(dot, "svg").decode("utf-8")
            sizes = valid_inputs(checked).describe()
        except NetDSLError as error:
            return {"error": error_json(error)}
    facts = {id(fact.node): fact for fact in instances(checked, costs)}
    listed = [summary.input_row(checked, costs)] + summary.rows(checked, costs, summary.DEFAULT_DEPTH)
    return {
        "network": checked.name, "networks": names, "file": str(path), "depth": depth,
        "input": list(checked.input_shape), "output": list(checked.output_shape),
        "params": checked.params, "macs": checked.macs, "sizes": sizes,
        "svg": svg[svg.index("<svg"):],
        "items": {name: {"facts": [facts[id(node)].to_json(dtype) for node in item.nodes],
                         "paths": list(dict.fromkeys(facts[id(node)].path for node in item.nodes)),
                         "toggle": item.toggle, "expands": item.expands}
                  for name, item in items.items()},
        "rows": [summary.row_json(row, dtype) for row in listed],
    }


def diff_of(first: Path, second: Path, depth: int = 1) -> dict:
    """`netdsl diff --json` of two files, with the paths of the stages that changed."""
    with _LOCK:
        try:
            result = summary.diff_json(api.check(first), api.check(second), depth)
        except NetDSLError as error:
            return {"error": error_json(error)}
    result["changed"] = [row["path"] for row in result["rows"] if row["a"] != row["b"]]
    return result


# ---- the server -----------------------------------------------------------------------------

class Viewer(ThreadingHTTPServer):
    """The HTTP server, knowing the directory it serves and the file it opens first."""

    daemon_threads = True

    def __init__(self, root: Path, first: str | None, address: tuple[str, int]) -> None:
        self.root = root.resolve()
        self.first = first
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/" + (f"?file={self.first}" if self.first else "")

    def shutdown(self) -> None:
        self.stopping.set()  # event streams end at their next poll
        super().shutdown()


class _Handler(BaseHTTPRequestHandler):
    server: Viewer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # quiet: the terminal shows the URL only
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            self.check_host()
            route = _ROUTES.get(url.path)
            if route is not None:
                route(self, query)
            elif url.path.startswith("/viewer/"):
                self.asset(url.path.removeprefix("/viewer/"))
            elif url.path.startswith("/files/"):
                path = inside(self.server.root, unquote(url.path.removeprefix("/files/")))
                self.send(path.read_bytes(), "text/plain; charset=utf-8")
            else:
                raise Refused(HTTPStatus.NOT_FOUND, f"{url.path}: no such page")
        except Refused as refused:
            self.send_json({"error": {"text": refused.message, "location": None}}, refused.status)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away

    def check_host(self) -> None:
        """On the loopback address, only pages of this machine's names may ask: a `Host` header
        naming anything else is a web page elsewhere reaching in through DNS rebinding (403)."""
        if not ipaddress.ip_address(self.server.server_address[0]).is_loopback:
            return  # --host: the user has chosen who may connect
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if host not in LOCAL_NAMES:
            raise Refused(HTTPStatus.FORBIDDEN, f"Host '{host}' is not this machine; open the viewer at {self.server.url}")

    # -- responses

    def send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, value: dict, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send(json.dumps(value).encode("utf-8"), "application/json", status)

    def asset(self, name: str) -> None:
        if name not in VIEWER_FILES:
            raise Refused(HTTPStatus.NOT_FOUND, f"{name}: not part of the viewer")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        body = resources.files("netdsl").joinpath("viewer", name).read_bytes()
        self.send(body, f"{content_type}; charset=utf-8")

    def file(self, query: dict, key: str = "file") -> Path:
        values = query.get(key)
        if not values:
            raise Refused(HTTPStatus.NOT_FOUND, f"no {key} named (?{key}=NAME.net)")
        return inside(self.server.root, values[0])

    # -- routes

    def page(self, query: dict) -> None:
        self.asset("index.html")

    def files(self, query: dict) -> None:
        self.send_json({"root": str(self.server.root), "files": net_files(self.server.root),
                        "first": self.server.first})

    def view(self, query: dict) -> None:
        network = query.get("network", [None])[0]
        self.send_json(view_of(self.file(query), network, tuple(query.get("expand", ())),
                               tuple(query.get("collapse", ())), query.get("legend") == ["1"]))

    def diff(self, query: dict) -> None:
        self.send_json(diff_of(self.file(query), self.file(query, "other")))

    def events(self, query: dict) -> None:
        """Server-sent events: `change` after every save of the file(s) or anything they import."""
        watched = [self.file(query)] + ([self.file(query, "other")] if "other" in query else [])
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.stream("retry: 1000\n\n")
        while not self.server.stopping.is_set():
            files = sorted({file for path in watched for file in dependencies(path)})
            if not wait_for_change(files, stamps(files), POLL_SECONDS, self.keepalive()):
                return
            self.stream("event: change\ndata: {}\n\n")

    def keepalive(self) -> Callable[[], bool]:
        """`wait_for_change`'s question: go on waiting? Writes a comment line now and then, which
        raises once the page has gone, ending the stream's thread."""
        last = [time.monotonic()]

        def keep_waiting() -> bool:
            if time.monotonic() - last[0] > KEEPALIVE_SECONDS:
                self.stream(": keep-alive\n\n")
                last[0] = time.monotonic()
            return not self.server.stopping.is_set()
        return keep_waiting

    def stream(self, text: str) -> None:
        self.wfile.write(text.encode("utf-8"))
        self.wfile.flush()


_ROUTES = {"/": _Handler.page, "/api/files": _Handler.files, "/api/view": _Handler.view,
           "/api/diff": _Handler.diff, "/events": _Handler.events}


def start(target: str | os.PathLike = ".", host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> Viewer:
    """A viewer serving `target` (a directory, or a file: its directory, opening it first), bound
    and ready for `serve_forever`. `OSError` when the address cannot be bound; `Refused` when the
    target is neither a directory nor a file."""
    path = Path(target)
    if path.is_dir():
        root, first = path, None
    elif path.is_file():
        root, first = path.parent, path.name
    else:
        raise Refused(HTTPStatus.NOT_FOUND, f"{target}: no such file or directory")
    return Viewer(root, first, (host, port))
