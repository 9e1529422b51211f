"""The language server, driven as an editor drives it: pygls's LSP client talking to
`python -m netdsl lsp` over stdio (one server process for the module), plus the pure pieces
(positions, call contexts) tested directly."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls import uris

from netdsl import api, lsp

ROOT = Path(__file__).resolve().parent.parent
STD_RESNET = ROOT / "netdsl" / "std" / "resnet.net"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("lsp_hover", ROOT / "benchmarks" / "lsp_hover.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()  # its client is this file's client, so the benchmark cannot rot
position_of = bench.position_of


@pytest.fixture(scope="module")
def session():
    client = bench.LspSession(cwd=ROOT)
    yield client
    client.close()


def _uri(path: Path) -> str:
    return uris.from_fs_path(str(path.resolve()))


def _span_of(text: str, needle: str) -> tuple[int, int, int]:
    line, character = position_of(text, needle)
    return line, character, character + len(needle)


def _cli_error(path: Path) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", str(path)], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    return result.stderr.splitlines()


# ---- diagnostics ----------------------------------------------------------------------------

BROKEN = """network broken {
  input [3, 32, 32]
  stem: conv(16, 3, pad=1)
  body: convv(32, 3)
}
"""


def test_diagnostic_has_the_cli_message_and_the_name_range(session, tmp_path):
    path = tmp_path / "broken.net"
    path.write_text(BROKEN)
    uri = session.open(path)
    [diagnostic] = session.wait_diagnostics(uri)
    line, start, end = _span_of(BROKEN, "convv")
    assert (diagnostic.range.start.line, diagnostic.range.start.character) == (line, start)
    assert (diagnostic.range.end.line, diagnostic.range.end.character) == (line, end)
    assert diagnostic.severity == types.DiagnosticSeverity.Error
    cli = _cli_error(path)
    assert cli[0] == f"{path}:{line + 1}:{start + 1}: error: {diagnostic.message.splitlines()[0]}"
    assert diagnostic.message.splitlines()[0] == "unknown layer or block 'convv'"
    assert "  hint: did you mean 'conv'?" in cli and "  hint: did you mean 'conv'?" in diagnostic.message.splitlines()


def test_diagnostic_columns_are_utf16_code_units(session, tmp_path):
    text = 'network n {\n  input [3, 8, 8]\n  let s = "\U0001F600"  let t = 1 + true\n}\n'
    uri = session.open(tmp_path / "emoji.net", text)
    [diagnostic] = session.wait_diagnostics(uri)
    line = text.splitlines()[2]
    start = len(line[:line.index("1 + true")].encode("utf-16-le")) // 2  # the emoji is 2 units, 1 character
    assert (diagnostic.range.start.line, diagnostic.range.start.character) == (2, start)
    assert diagnostic.range.end.character == start + len("1 + true")
    assert diagnostic.message.startswith("operator '+' cannot combine")


def test_diagnostics_follow_unsaved_edits(session, tmp_path):
    path = tmp_path / "edited.net"
    path.write_text(BROKEN)
    uri = session.open(path)
    assert len(session.wait_diagnostics(uri)) == 1
    session.change(uri, BROKEN.replace("convv", "conv"))  # fixed in the buffer only
    assert session.wait_diagnostics(uri) == []
    session.change(uri, BROKEN.replace("pad=1)", "pad=1"))  # mid-edit: unbalanced parenthesis
    [diagnostic] = session.wait_diagnostics(uri)
    assert diagnostic.message.startswith("unexpected "), diagnostic.message
    assert diagnostic.range.start.line == 3  # where the parser noticed: the next statement


def test_shape_error_range_and_instantiation_chain(session, tmp_path):
    text = ('block widen(out) {\n  residual {\n    conv(out, 3, pad=1)\n  } shortcut identity\n}\n'
            'network net {\n  input [8, 16, 16]\n  a: widen(16)\n}\n')
    path = tmp_path / "shape.net"
    path.write_text(text)
    uri = session.open(path)
    [diagnostic] = session.wait_diagnostics(uri)
    cli = _cli_error(path)
    assert cli[0].endswith(diagnostic.message.splitlines()[0])
    assert diagnostic.range.start.line == 1  # the residual, inside the block
    assert "in block 'widen'" in diagnostic.message
    [related] = diagnostic.related_information
    assert related.location.uri == uri and related.location.range.start.line == 7  # a: widen(16)


def test_error_in_an_imported_file_goes_on_the_import_line(session, tmp_path):
    (tmp_path / "lib.net").write_text("block unit(c) {\n  conv(c, 3 pad=1)\n}\n")
    text = 'import "lib.net"\n\nnetwork net {\n  input [3, 8, 8]\n  unit(4)\n}\n'
    uri = session.open(tmp_path / "main.net", text)  # never saved: imports resolve from its path
    [diagnostic] = session.wait_diagnostics(uri)
    assert diagnostic.range.start.line == 0 and diagnostic.range.end.character == len('import "lib.net"')
    assert diagnostic.message.startswith(f"{tmp_path / 'lib.net'}:2:13: unexpected 'pad'"), diagnostic.message
    [related] = diagnostic.related_information
    assert related.location.uri == _uri(tmp_path / "lib.net")
    assert (related.location.range.start.line, related.location.range.start.character) == (1, 12)


def test_error_in_an_imported_block_goes_on_the_call(session, tmp_path):
    (tmp_path / "lib.net").write_text("block unit(c) {\n  conv(c, 3, pad=1)\n  flatten\n  conv(c, 3)\n}\n")
    text = 'import "lib.net"\nnetwork net {\n  input [3, 8, 8]\n  body: unit(4)\n}\n'
    uri = session.open(tmp_path / "main.net", text)
    [diagnostic] = session.wait_diagnostics(uri)
    line, start, end = _span_of(text, "unit(4)")
    assert (diagnostic.range.start.line, diagnostic.range.start.character, diagnostic.range.end.character) == (
        line, start, end)
    assert "conv expects a [channels, height, width] input" in diagnostic.message
    locations = [(r.location.uri, r.location.range.start.line) for r in diagnostic.related_information]
    assert (_uri(tmp_path / "lib.net"), 3) in locations  # the real error: line 4 of lib.net


# ---- hover ----------------------------------------------------------------------------------

def test_hover_on_a_label_shows_shape_parameters_and_macs(session):
    path = ROOT / "networks" / "resnet.net"
    text = path.read_text()
    uri = session.open(path)
    assert session.wait_diagnostics(uri) == []
    line, character = position_of(text, "conv1:")
    hover = session.hover(uri, line, character + 2)
    conv1 = dict(api.check(path).layers())["conv1"]
    assert conv1.out_shape == (64, 112, 112) and conv1.params == 64 * 3 * 7 * 7
    value = hover.contents.value
    assert "[3, 224, 224] -> [64, 112, 112]" in value and "9,408 params" in value and "118.01 M MACs" in value
    assert (hover.range.start.line, hover.range.start.character, hover.range.end.character) == (
        line, character, character + len("conv1"))


def test_hover_on_a_variant_shows_the_network(session):
    path = ROOT / "networks" / "resnet152.net"
    text = path.read_text()
    uri = session.open(path)
    line, character = position_of(text, "resnet(depth")
    value = session.hover(uri, line, character).contents.value
    assert "**network resnet152**" in value
    assert "input [3, 224, 224] -> output [1000]" in value
    assert "60,192,808 parameters" in value  # torchvision's resnet152 has 60,192,808


def test_hover_in_a_block_lists_every_instance(session):
    session.open(ROOT / "networks" / "resnet152.net")
    text = STD_RESNET.read_text()
    uri = session.open(STD_RESNET)  # a library: its instances come from resnet152.net, open beside it
    line, character = position_of(text, "conv2: conv(width")
    value = session.hover(uri, line, character).contents.value
    assert "instances in " in value and "resnet152" in value  # resnet(-50) too, when resnet.net is open
    assert "x35 conv  [256, 14, 14] -> [256, 14, 14]  589,824 params" in value  # resnet152's 36 units, less the first
    assert "x1 conv  [128, 56, 56] -> [128, 28, 28]  147,456 params" in value  # layer2.0 strides


def test_hover_on_a_block_name_shows_its_signature(session):
    path = ROOT / "networks" / "resnet.net"
    text = path.read_text()
    uri = session.open(path)
    line, character = position_of(text, "bottleneck")
    value = session.hover(uri, line, character + 1).contents.value
    assert "block bottleneck(planes, stride=1, groups=1, base_width=64, expansion=4)" in value


# ---- definition -----------------------------------------------------------------------------

def test_definition_of_a_block_jumps_into_the_standard_library(session):
    path = ROOT / "networks" / "resnet.net"
    text = path.read_text()
    uri = session.open(path)
    line, character = position_of(text, "bottleneck")
    location = session.definition(uri, line, character + 3)
    assert location.uri == _uri(STD_RESNET)
    target_line, target_character = position_of(STD_RESNET.read_text(), "bottleneck(planes")
    assert (location.range.start.line, location.range.start.character) == (target_line, target_character)


def test_definition_of_a_local_and_of_an_import(session):
    path = ROOT / "networks" / "resnet.net"
    text = path.read_text()
    uri = session.open(path)
    line, character = position_of(text, "stage(unit")
    location = session.definition(uri, line, character + len("stage(") + 1)
    assert (location.uri, location.range.start.line) == (uri, position_of(text, "unit =")[0])
    line, character = position_of(text, '"std/resnet.net"')
    assert session.definition(uri, line, character + 3).uri == _uri(STD_RESNET)


# ---- completion -----------------------------------------------------------------------------

def test_completion_lists_layers_blocks_and_parameters(session, tmp_path):
    text = 'import "std/resnet.net"\nnetwork n {\n  input [3, 32, 32]\n  conv(16, 3, stride=2, \n}\n'
    uri = session.open(tmp_path / "typing.net", text)
    line, character = position_of(text, "stride=2, ")
    labels = [item.label for item in session.completion(uri, line, character + len("stride=2, ")).items]
    assert labels[:6] == ["out=", "kernel=", "pad=", "dilation=", "groups=", "bias="]  # stride= is given
    documented = {item.label: item.documentation for item in session.completion(uri, line, character + len("stride=2, ")).items}
    assert documented["pad="] == "zero padding on each side (also spelled padding)"  # from the registry's Param
    assert documented["groups="] == "grouped convolution (also spelled cardinality)"
    assert "conv" in labels and "bottleneck" in labels and "stride=" not in labels
    line = text.count("\n", 0, text.index("  conv("))
    items = session.completion(uri, line, 2).items
    labels = {item.label for item in items}
    assert {"conv", "bn", "maxpool", "bottleneck", "stage", "residual", "for"} <= labels
    assert not any(label.endswith("=") for label in labels)
    conv = next(item for item in items if item.label == "conv")
    assert conv.detail == "conv(out, kernel, stride=1, pad=0, dilation=1, groups=1, bias=true)"


def test_completion_of_block_parameters(session, tmp_path):
    text = 'import "std/resnet.net"\nnetwork n {\n  input [64, 56, 56]\n  bottleneck(64, '
    uri = session.open(tmp_path / "block.net", text)
    items = session.completion(uri, 3, len("  bottleneck(64, ")).items
    assert [item.label for item in items[:5]] == ["planes=", "stride=", "groups=", "base_width=", "expansion="]


@pytest.mark.parametrize("text, expected", [
    ("conv(16, ", ("conv", set())),
    ("conv(16, stride=2, pad=", ("conv", {"stride", "pad"})),
    ("conv(16, [1, 2], stride=(1 + 2) * 3, ", ("conv", {"stride"})),
    ("stage(unit, x == 2, ", ("stage", set())),
    ("conv(16) bn(", ("bn", set())),
    ("conv(16)", None),
    ("block unit(c, ", None),  # a parameter list is not a call
    ('conv(16, # a comment (\n', ("conv", set())),
    ('"label(": conv(', ("conv", set())),
])
def test_call_context(text, expected):
    context = lsp.call_context(text, len(text))
    assert (None if context is None else (context.callee, context.given)) == expected


# ---- formatting, robustness, speed ----------------------------------------------------------

def test_formatting_uses_netdsl_fmt(session, tmp_path):
    fmt = pytest.importorskip("netdsl.fmt")
    if not hasattr(fmt, "format_source"):
        pytest.skip("netdsl.fmt has no format_source yet")
    text = "network  n{input [3,8,8]\nconv( 4,3 )}\n"
    uri = session.open(tmp_path / "messy.net", text)
    assert session.capabilities.document_formatting_provider
    [edit] = session.formatting(uri)
    assert edit.new_text == fmt.format_source(text, str(tmp_path / "messy.net")) != text
    assert (edit.range.start.line, edit.range.start.character) == (0, 0)


def test_server_survives_hostile_text(session, tmp_path):
    uri = session.open(tmp_path / "junk.net", "network n { input [3, 8, 8] " + "{ " * 5000)
    [diagnostic] = session.wait_diagnostics(uri)
    assert diagnostic.severity == types.DiagnosticSeverity.Error
    assert "internal error" not in diagnostic.message
    assert session.hover(uri, 0, 3) is None or session.hover(uri, 0, 3).contents


def test_hover_benchmark_runs(session):
    """The benchmark's own measuring code works (speed is reported by benchmarks/lsp_hover.py,
    never asserted in tests)."""
    result = bench.measure(session, ROOT / "networks" / "resnet152.net", "resnet(", repeats=2)
    assert "60,192,808 parameters" in result["hover"]
    assert result["median_ms"] > 0


# ---- a server that always answers (issue 13 items 13, 15) ----------------------------------

class _RawSession:
    """JSON-RPC written by hand to `python -m netdsl lsp`, for what a well-behaved client cannot send."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "netdsl", "lsp"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
        self.buffer, self.last = b"", 0
        self.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        self.notify("initialized", {})

    def notify(self, method: str, params: dict, **extra) -> None:
        data = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, **extra}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        self.process.stdin.flush()

    def request(self, method: str, params: dict, timeout: float = 60) -> dict:
        """The answer to one request (its `result` or `error`); fails when none comes within `timeout`."""
        self.last += 1
        self.notify(method, params, id=self.last)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._message(deadline)
            if message is not None and message.get("id") == self.last and "method" not in message:
                return message
        raise AssertionError(f"no answer to {method} within {timeout} s")

    def _message(self, deadline: float) -> dict | None:
        while b"\r\n\r\n" not in self.buffer or len(self.buffer.partition(b"\r\n\r\n")[2]) < self._length():
            ready, _, _ = select.select([self.process.stdout], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                return None
            self.buffer += os.read(self.process.stdout.fileno(), 1 << 16)
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = self._length()
        self.buffer = rest[length:]
        return json.loads(rest[:length])

    def _length(self) -> int:
        head = self.buffer.partition(b"\r\n\r\n")[0]
        return int(re.search(rb"Content-Length: (\d+)", head)[1]) if b"Content-Length" in head else 0

    def open(self, name: str, text: str) -> str:
        uri = uris.from_fs_path(str(ROOT / name))
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "netdsl", "version": 1,
                                                              "text": text}})
        return uri

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def raw():
    client = _RawSession()
    yield client
    client.close()


def test_malformed_requests_get_errors_and_the_server_goes_on(raw):
    uri = raw.open("scratch.net", "network n {\n  input [3, 8, 8]\n  conv(4, 3)\n}\n")
    for params in ({"textDocument": {"uri": uri}, "position": {"line": -1, "character": -5}},
                   {"textDocument": {"uri": uri}, "position": {"line": 0}},
                   {"textDocument": {"uri": uri}}) * 3:
        answer = raw.request("textDocument/hover", params, timeout=20)
        assert answer["error"]["code"] == -32602  # invalid params
    past_end = raw.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 99, "character": 0}})
    assert past_end["result"] is None
    hover = raw.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 2, "character": 3}})
    assert "conv" in hover["result"]["contents"]["value"]


def test_a_large_or_hostile_document_does_not_block_requests(raw):
    small = raw.open("small.net", "network n {\n  input [3, 8, 8]\n  conv(4, 3)\n}\n")
    raw.request("textDocument/hover", {"textDocument": {"uri": small}, "position": {"line": 2, "character": 3}})
    big = raw.open("big.net", "network n {\n  input [3, 8, 8]\n" + "  relu\n" * 140_000 + "}\n")  # 1 MB
    started = time.monotonic()
    hover = raw.request("textDocument/hover", {"textDocument": {"uri": small}, "position": {"line": 2, "character": 3}})
    assert hover["result"] is not None and time.monotonic() - started < 1.5
    answer = raw.request("textDocument/completion", {"textDocument": {"uri": big}, "position": {"line": 2, "character": 2}})
    assert answer["result"]["items"] and time.monotonic() - started < lsp.FRESH_SECONDS + 3
    shared = raw.open("shared.net", "network n {\n  input [3, 8, 8]\n  let d = [[[[1] * 1000] * 1000] * 1000] * 1000\n"
                                    "  assert d == d\n}\n")
    started = time.monotonic()
    raw.request("textDocument/hover", {"textDocument": {"uri": shared}, "position": {"line": 2, "character": 7}})
    assert time.monotonic() - started < lsp.FRESH_SECONDS + 3
