"""`--watch`: a real `netdsl check --watch` process re-checking as files change, and the
dependency discovery it relies on."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netdsl import cli, watch

import zoo

LIB = "block unit(c) {\n  conv(c, 3, pad=1)\n  relu\n}\n"
MAIN = 'import "lib.net"\nnetwork net {\n  input [3, 8, 8]\n  body: unit(CHANNELS)\n}\n'


def _touch(path: Path, text: str) -> None:
    """Write and move the modification time forward, so a change is seen even on a coarse clock."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


class _Lines:
    """Lines of a child's output (stdout and stderr on one pipe, so in order), read in a thread."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(process.stdout,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; saw:\n" + "\n".join(self.seen))


def test_check_watch_reruns_on_changes_to_the_file_and_its_imports(tmp_path):
    lib, main = tmp_path / "lib.net", tmp_path / "main.net"
    _touch(lib, LIB)
    _touch(main, MAIN.replace("CHANNELS", "4"))
    process = subprocess.Popen([sys.executable, "-m", "netdsl", "check", "--watch", str(main)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               preexec_fn=zoo.as_in_a_terminal)
    try:
        lines = _Lines(process)
        assert "112 parameters" in lines.wait_for("ok: network net")  # 4 * 3 * 9 + 4
        lines.wait_for("watching 2 files")
        _touch(lib, LIB.replace("pad=1", "pad=1, bias=false"))  # an import changed
        assert "108 parameters" in lines.wait_for("ok: network net")
        _touch(lib, LIB.replace("relu", "relu("))  # a syntax error: reported, and the loop goes on
        assert "lib.net:4:1: error: unexpected" in lines.wait_for("error:")
        lines.wait_for("watching 2 files")
        _touch(lib, LIB)
        _touch(main, MAIN.replace("CHANNELS", "8"))
        assert "224 parameters" in lines.wait_for("ok: network net")
        lines.wait_for("watching")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 130
        time.sleep(0.2)  # let the reader threads drain
        while not lines.lines.empty():
            lines.seen.append(lines.lines.get())
        assert not any("Traceback" in line or "interrupted" in line for line in lines.seen), lines.seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_usage_error_ends_the_watch(tmp_path):
    main = tmp_path / "main.net"
    _touch(tmp_path / "lib.net", LIB)
    _touch(main, MAIN.replace("CHANNELS", "4"))
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", "--watch", str(main), "-D", "oops"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "netdsl: error: -D expected NAME=VALUE, got 'oops'" in result.stderr


def test_draw_watch_goes_through_the_same_loop(monkeypatch, tmp_path):
    calls = []

    def fake_watch(path, run_once, stop_on):
        calls.append((path, run_once(), tuple(stop_on)))
        return 0

    monkeypatch.setattr(watch, "watch", fake_watch)
    monkeypatch.setitem(cli.COMMANDS, "draw", lambda args: 7)
    assert cli.main(["draw", "--watch", str(tmp_path / "x.net")]) == 0
    assert calls == [(str(tmp_path / "x.net"), 7, (2, 130, 141))]


def test_dependencies_follow_imports_and_survive_broken_files(tmp_path):
    (tmp_path / "sub").mkdir()
    _touch(tmp_path / "sub" / "deep.net", 'import "std/blocks.net"\nblock deep { relu }\n')
    _touch(tmp_path / "lib.net", 'import "sub/deep.net"\nimport "missing.net"\nblock unit { deep }\n')
    _touch(tmp_path / "main.net", 'import "lib.net"\nnetwork n { input [3, 8, 8] unit }\n')
    found = watch.dependencies(tmp_path / "main.net")
    std_blocks = Path(watch.__file__).resolve().parent / "std" / "blocks.net"
    assert found == [(tmp_path / name).resolve() for name in ("main.net", "lib.net", "sub/deep.net")] + [std_blocks]
    _touch(tmp_path / "lib.net", 'import "sub/deep.net"\nblock unit {')  # no longer parses: still watched
    assert watch.dependencies(tmp_path / "main.net") == [(tmp_path / "main.net").resolve(), (tmp_path / "lib.net").resolve()]
    assert watch.dependencies(tmp_path / "absent.net") == [(tmp_path / "absent.net").resolve()]


@pytest.mark.parametrize("code", [2, 130])
def test_watch_stops_on_the_given_codes(tmp_path, code):
    _touch(tmp_path / "a.net", "network n { input [3] }\n")
    runs = []
    assert watch.watch(str(tmp_path / "a.net"), lambda: runs.append(1) or code, stop_on=(2, 130)) == code
    assert runs == [1]
