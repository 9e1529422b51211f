"""Hover latency (and re-check time) of `netdsl lsp`, as an editor sees it.

Starts the language server as a subprocess (`python -m netdsl lsp`), drives it with pygls's
own LSP client over stdio, opens a document and times hover requests from send to reply: the
first hover is sent right after `didOpen`, so it also waits for the document's check; the
median is over the following ones. The target (issue 7) is < 200 ms.

    python benchmarks/lsp_hover.py [--repeats N]

`LspSession` is also the client `tests/test_lsp.py` uses, so this script is exercised in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls import uris
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parent.parent


class LspSession:
    """A synchronous wrapper around pygls's `LanguageClient` talking to `python -m netdsl lsp`.

    Each call runs the client's event loop until its answer arrives; notifications from the
    server (diagnostics) are collected meanwhile."""

    def __init__(self, cwd: Path = ROOT, timeout: float = 60.0):
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.client = LanguageClient("netdsl-bench", "1")
        self.diagnostics: dict[str, types.PublishDiagnosticsParams] = {}
        self.versions: dict[str, int] = {}

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: types.PublishDiagnosticsParams) -> None:
            self.diagnostics[params.uri] = params

        self.run(self.client.start_io(sys.executable, "-m", "netdsl", "lsp", cwd=str(cwd)))
        self.capabilities = self.run(self.client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), process_id=os.getpid(), root_uri=uris.from_fs_path(str(cwd)),
        ))).capabilities
        self.client.initialized(types.InitializedParams())

    def run(self, awaitable):
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, self.timeout))

    def open(self, path: Path, text: str | None = None) -> str:
        uri = uris.from_fs_path(str(Path(path).resolve()))
        self.versions[uri] = 1
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=uri, language_id="netdsl", version=1,
            text=text if text is not None else Path(path).read_text(encoding="utf-8"))))
        return uri

    def change(self, uri: str, text: str) -> None:
        """Replaces the whole buffer (unsaved), as an editor does on each keystroke."""
        self.versions[uri] += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(version=self.versions[uri], uri=uri),
            [types.TextDocumentContentChangeWholeDocument(text=text)]))

    def wait_diagnostics(self, uri: str) -> list[types.Diagnostic]:
        """The diagnostics for the document's current version."""
        async def arrived():
            while (self.diagnostics.get(uri) is None
                   or self.diagnostics[uri].version != self.versions[uri]):
                await asyncio.sleep(0.005)
            return list(self.diagnostics[uri].diagnostics)
        return self.run(arrived())

    def hover(self, uri: str, line: int, character: int) -> types.Hover | None:
        return self.run(self.client.text_document_hover_async(types.HoverParams(
            types.TextDocumentIdentifier(uri), types.Position(line, character))))

    def definition(self, uri: str, line: int, character: int):
        return self.run(self.client.text_document_definition_async(types.DefinitionParams(
            types.TextDocumentIdentifier(uri), types.Position(line, character))))

    def completion(self, uri: str, line: int, character: int):
        return self.run(self.client.text_document_completion_async(types.CompletionParams(
            types.TextDocumentIdentifier(uri), types.Position(line, character))))

    def formatting(self, uri: str):
        return self.run(self.client.text_document_formatting_async(types.DocumentFormattingParams(
            types.TextDocumentIdentifier(uri), types.FormattingOptions(tab_size=2, insert_spaces=True))))

    def close(self) -> None:
        try:
            self.run(self.client.shutdown_async(None))
            self.client.exit(None)
            self.run(self.client.stop())
        finally:
            self.loop.close()


def position_of(text: str, needle: str) -> tuple[int, int]:
    """0-based line and character of the first occurrence of `needle`."""
    offset = text.index(needle)
    line = text.count("\n", 0, offset)
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def measure(session: LspSession, path: Path, needle: str, repeats: int) -> dict:
    """Open `path`, hover on `needle` at once (first), then `repeats` more times (median)."""
    text = path.read_text(encoding="utf-8")
    line, character = position_of(text, needle)
    start = time.perf_counter()
    uri = session.open(path, text)
    first_hover = session.hover(uri, line, character + 1)
    first = time.perf_counter() - start
    times, hover = [], first_hover
    for _ in range(repeats):
        start = time.perf_counter()
        hover = session.hover(uri, line, character + 1)
        times.append(time.perf_counter() - start)
    return {"file": str(path.relative_to(ROOT)), "at": needle, "first_ms": first * 1000,
            "median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000,
            "hover": hover.contents.value if hover is not None else None}


def measure_recheck(session: LspSession, path: Path, repeats: int) -> float:
    """Median milliseconds from an edit (`didChange`, whole text) to its diagnostics."""
    text = path.read_text(encoding="utf-8")
    uri = session.open(path, text)
    session.wait_diagnostics(uri)
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        session.change(uri, f"{text}\n# edit {index}\n")
        session.wait_diagnostics(uri)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


# (file, text to hover on): the variant's base in resnet152.net, conv1 and a stage in resnet.net,
# a block's layer instantiated 50 times when std/resnet.net is open beside resnet152.net.
CASES = [("networks/resnet152.net", "resnet("), ("networks/resnet.net", "conv1"),
         ("networks/resnet.net", "layer3"), ("netdsl/std/resnet.net", "conv2: conv(width")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="hovers per file after the first (default 50)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    session = LspSession()
    print(f"server start-up and initialize: {(time.perf_counter() - start) * 1000:.0f} ms")
    try:
        for file, needle in CASES:
            result = measure(session, ROOT / file, needle, args.repeats)
            print(f"{result['file']:<26} hover on {needle!r:<22} first (incl. didOpen check) "
                  f"{result['first_ms']:6.1f} ms   median of {args.repeats} {result['median_ms']:5.1f} ms   "
                  f"max {result['max_ms']:5.1f} ms")
        for file in ("networks/resnet152.net", "networks/resnet.net"):
            print(f"{file:<26} edit -> diagnostics (re-check), median of {args.repeats}: "
                  f"{measure_recheck(session, ROOT / file, args.repeats):5.1f} ms")
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
