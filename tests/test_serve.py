"""`netdsl serve` without a browser: what may be served, the JSON the page gets (the same facts as
the language server's hover), the event stream, and the command itself. The page in a real
browser: tests/test_viewer.py."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netdsl import lsp, serve

import zoo

ROOT = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")

TINY = """block unit(c, stride=1) {
  conv(c, 3, stride=stride, pad=1, bias=false)
  bn
  relu
}

network tiny(width=8) {
  input [3, 16, 16]
  stem: conv(width, 3, pad=1)
  stage1: {
    a: unit(width)
    b: unit(width)
    c: unit(width)
  }
  stage2: unit(width * 2, stride=2)
  head: {
    adaptive_avgpool(1)
    flatten
    linear(10)
  }
}
"""


@pytest.fixture
def site(tmp_path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "tiny.net").write_text(TINY)
    (root / "wide.net").write_text(TINY.replace("width=8", "width=16"))
    (tmp_path / "secret.net").write_text("network secret { input [3, 8, 8] }\n")
    return root


@pytest.fixture
def running(site):
    viewer = serve.start(site, port=0)
    thread = threading.Thread(target=viewer.serve_forever, daemon=True)
    thread.start()
    yield viewer
    viewer.shutdown()
    viewer.server_close()


def _get(viewer, path: str) -> tuple[int, bytes]:
    """A raw GET: the path is sent exactly as written (no client tidies `..` away)."""
    connection = http.client.HTTPConnection(*viewer.server_address[:2], timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


# ---- what may be served -----------------------------------------------------------------------

def test_only_files_under_the_served_directory_are_read(site, running):
    (site / "out.net").symlink_to(site.parent / "secret.net")  # a link leading out
    (site / "sub").mkdir()
    (site / "sub" / "in.net").symlink_to(site / "tiny.net")  # a link staying inside is fine
    assert _get(running, "/files/tiny.net") == (200, TINY.encode())
    assert _get(running, "/files/sub/in.net")[0] == 200
    for path in ["/files/../secret.net", "/files/%2e%2e/secret.net", "/files/sub/../../secret.net",
                 "/files/out.net", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd",
                 "/api/view?file=../secret.net", "/api/view?file=/etc/passwd", "/api/view?file=out.net",
                 "/events?file=../secret.net", "/api/diff?file=tiny.net&other=../secret.net"]:
        status, body = _get(running, path)
        assert status == 403, path
        assert "outside the served directory" in body.decode() or "absolute path" in body.decode(), path
    assert _get(running, "/files/missing.net")[0] == 404
    assert _get(running, "/viewer/../serve.py")[0] == 404  # only the viewer's own files
    assert _get(running, "/nothing")[0] == 404


def test_only_pages_of_this_machine_may_ask(running):
    """DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 sends its own Host."""
    connection = http.client.HTTPConnection(*running.server_address[:2], timeout=10)
    connection.request("GET", "/api/files", headers={"Host": f"evil.example:{running.server_address[1]}"})
    response = connection.getresponse()
    assert response.status == 403 and "Host 'evil.example' is not this machine" in response.read().decode()
    for host in ("localhost", "127.0.0.1"):
        connection = http.client.HTTPConnection(*running.server_address[:2], timeout=10)
        connection.request("GET", "/api/files", headers={"Host": f"{host}:{running.server_address[1]}"})
        assert connection.getresponse().status == 200


def test_the_page_and_its_files_come_from_the_package(running):
    status, page = _get(running, "/")
    assert status == 200 and b'<script src="/viewer/viewer.js"' in page
    for name in ("viewer.js", "viewer.css"):
        assert _get(running, f"/viewer/{name}")[0] == 200
    status, body = _get(running, "/api/files")
    assert json.loads(body)["files"] == ["tiny.net", "wide.net"]


# ---- the JSON the page gets ----------------------------------------------------------------

@needs_dot
def test_view_is_the_drawing_with_the_hover_facts_of_every_node(site):
    view = serve.view_of(site / "tiny.net")
    assert view["network"] == "tiny" and view["svg"].startswith("<svg")
    assert view["sizes"].startswith("valid inputs:")
    by_path = {facts["path"]: facts for item in view["items"].values() for facts in item["facts"]}
    stem = by_path["stem"]
    assert stem["params"] == 3 * 8 * 9 + 8 and stem["output"] == [8, 16, 16]
    assert stem["memory"] == {"elements": 8 * 16 * 16, "bytes": 4 * 8 * 16 * 16}
    assert stem["location"]["line"] == 9
    # the language server's hover says the same of the same node: one analysis
    analysis = lsp.analyse(str(site / "tiny.net"), TINY)
    (hover,) = [instance for found in analysis.instances.values() for instance in found if instance.path == "stem"]
    assert hover.to_json() == stem
    assert f"{stem['params']:,} params" in lsp.describe_instances([hover])
    assert f"{stem['memory']['elements']:,} elements" in lsp.describe_instances([hover])
    # the summary table's rows, with paths the drawing's items use
    assert [row["path"] for row in view["rows"]][:3] == ["input", "stem", "stage1"]


@needs_dot
def test_a_click_folds_and_unfolds_one_module(site):
    def items(**folds):
        return serve.view_of(site / "tiny.net", **folds)["items"].values()

    stage1 = [item for item in items() if item["toggle"] == "stage1.a"]
    assert stage1 and not stage1[0]["expands"]  # drawn open (the default depth shows everything)
    folded = [item for item in items(collapse=("stage1",)) if item["toggle"] == "stage1"]
    assert folded and folded[0]["expands"]
    assert not any(path.startswith("stage1.") for item in items(collapse=("stage1",)) for path in item["paths"])
    again = items(collapse=("stage1",), expand=("stage1",))  # folding wins: the page sends one or the other
    assert not any(path.startswith("stage1.") for item in again for path in item["paths"])


@needs_dot
def test_a_file_of_several_networks_shows_the_first_or_the_one_asked_for(site):
    (site / "two.net").write_text("network a { input [3, 8, 8] conv(4, 3) }\nnetwork b { input [3, 8, 8] conv(8, 3) }\n")
    first = serve.view_of(site / "two.net")
    assert (first["network"], first["networks"], first["params"]) == ("a", ["a", "b"], 3 * 4 * 9 + 4)
    assert serve.view_of(site / "two.net", network="b")["params"] == 3 * 8 * 9 + 8
    assert "no network named 'c'" in serve.view_of(site / "two.net", network="c")["error"]["text"]


@needs_dot
def test_the_legend_on_request(site):
    assert ">legend<" not in serve.view_of(site / "tiny.net")["svg"]
    svg = serve.view_of(site / "tiny.net", legend=True)["svg"]
    assert ">legend<" in svg and ">activation<" in svg and "> relu<" in svg


def test_without_graphviz_the_page_says_how_to_install_it(site, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    error = serve.view_of(site / "tiny.net")["error"]
    assert "the Graphviz program 'dot' is not installed" in error["text"] and "apt-get install graphviz" in error["text"]


@needs_dot
def test_an_error_comes_back_located(site):
    (site / "bad.net").write_text(TINY.replace("stem: conv(width, 3, pad=1)", "stem: conv(width, 3, pad=1"))
    error = serve.view_of(site / "bad.net")["error"]
    assert error["location"]["line"] == 10 and "error:" in error["text"] and "^" in error["text"]


def test_diff_names_the_changed_stages(site):
    result = serve.diff_of(site / "tiny.net", site / "wide.net")
    assert set(result["changed"]) == {"stem", "stage1", "stage2", "head"}
    (site / "same.net").write_text(TINY.replace("stage2: unit(width * 2, stride=2)", "stage2: unit(width * 3, stride=2)"))
    assert serve.diff_of(site / "tiny.net", site / "same.net")["changed"] == ["stage2", "head"]


def test_the_event_stream_says_change_after_a_save(site, running):
    connection = http.client.HTTPConnection(*running.server_address[:2], timeout=5)
    connection.request("GET", "/events?file=tiny.net")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert response.fp.readline() == b"retry: 1000\n"
    response.fp.readline()
    time.sleep(0.3)  # the stream has taken its first look at the files
    started = time.monotonic()
    path = site / "tiny.net"
    path.write_text(TINY.replace("width=8", "width=4"))
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert response.fp.readline() == b"event: change\n"
    assert time.monotonic() - started < 2


# ---- the command --------------------------------------------------------------------------

def _netdsl(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "netdsl", *args], stderr=subprocess.PIPE, text=True,
                            preexec_fn=zoo.as_in_a_terminal, **kwargs)


def test_serve_command_serves_until_interrupted(site):
    process = _netdsl("serve", str(site / "tiny.net"), "--port", "0")
    try:
        line = process.stderr.readline()
        assert line.startswith(f"netdsl: serving {site.resolve()} at http://127.0.0.1:") and "?file=tiny.net" in line
        port = int(line.split("127.0.0.1:", 1)[1].split("/", 1)[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/api/view?file=..%2Fsecret.net")
        assert connection.getresponse().status == 403
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/api/files")
        assert json.loads(connection.getresponse().read())["first"] == "tiny.net"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130


@pytest.mark.parametrize("args, message", [
    (["missing.net"], "netdsl: error: missing.net: no such file or directory"),
    ([".", "--port", "70000"], "netdsl: error: --port must be between 0 and 65535, got 70000"),
    ([".", "--host", "no-such-host.invalid"], "netdsl: error: cannot listen on no-such-host.invalid port 8765: "),
])
def test_serve_command_refuses_bad_arguments(args, message, tmp_path):
    process = _netdsl("serve", *args, cwd=tmp_path)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stderr.startswith(message) and len(stderr.strip().splitlines()) == 1


def test_serve_command_refuses_a_port_in_use(site):
    busy = serve.start(site, port=0)
    try:
        process = _netdsl("serve", str(site), "--port", str(busy.server_address[1]))
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 2
        assert stderr.startswith(f"netdsl: error: cannot listen on 127.0.0.1 port {busy.server_address[1]}: ")
    finally:
        busy.server_close()


def test_open_starts_the_browser_on_the_page_and_another_host_is_announced(site, tmp_path):
    opened = tmp_path / "opened.txt"
    opener = tmp_path / "opener"
    opener.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    opener.chmod(0o755)
    process = _netdsl("serve", str(site), "--port", "0", "--open", "--host", "0.0.0.0",
                      env={**os.environ, "BROWSER": str(opener)})
    try:
        line = process.stderr.readline()
        assert line.startswith(f"netdsl: serving {site.resolve()} at http://0.0.0.0:")
        assert process.stderr.readline().strip() == "netdsl: note: --host 0.0.0.0: other machines can reach the viewer"
        deadline = time.monotonic() + 10
        while not (opened.exists() and opened.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert opened.read_text().strip() == line.split(" at ", 1)[1].split(" ", 1)[0]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
