"""The wheel ships the grammar and the standard library, and netdsl runs from it alone."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stderr[-2000:]}")
    (path,) = out.glob("netdsl-*.whl")
    return path


def test_wheel_contains_grammar_stdlib_and_entry_point(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "netdsl/grammar/netdsl.lark" in names
    assert {"netdsl/std/blocks.net", "netdsl/std/resnet.net"} <= names
    assert "netdsl/devices.json" in names  # the device profiles: --fit, --bound
    assert {"netdsl/viewer/index.html", "netdsl/viewer/viewer.js", "netdsl/viewer/viewer.css"} <= names  # serve
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "netdsl = netdsl.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_package_runs_without_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "n.net").write_text('import "std/resnet.net"\nnetwork n { input [3, 32, 32] basic(64) }\n')
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import netdsl, sys; g = netdsl.check('n.net'); "
            "assert netdsl.__file__.startswith(sys.argv[1]), netdsl.__file__; print(g.params)")
    result = subprocess.run([sys.executable, "-c", code, str(site)], cwd=work, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(3 * 64 * 9 + 128 + 64 * 64 * 9 + 128 + 3 * 64 + 128)
