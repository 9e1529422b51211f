"""User-defined ops from an installed package (docs/extending.md): the example package in
examples/netdsl-example-ops, installed into a temporary site directory the way an installer lays
it out (the package and its .dist-info with the entry point), then used from the command line."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import layers
from netdsl.errors import NetDSLError
from netdsl.layers import REGISTRY, LayerDef, register_op

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "netdsl-example-ops"

NETWORK = """
network scaled(classes=10) {
  input [3, 16, 16]
  conv1: conv(8, 3, pad=1)
  scale: learned_scale(init=0.5)
  relu
  pool: adaptive_avgpool(1)
  flatten
  fc: linear(classes)
}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory holding the example package as installed: its code and its .dist-info."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(EXAMPLE / "netdsl_example_ops", site / "netdsl_example_ops")
    info = site / "netdsl_example_ops-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: netdsl-example-ops\nVersion: 0.1.0\n")
    entry_points = EXAMPLE.joinpath("pyproject.toml").read_text().split('[project.entry-points."netdsl.ops"]')[1]
    name, value = (part.strip().strip('"') for part in entry_points.strip().split("="))  # TOML -> entry_points.txt
    (info / "entry_points.txt").write_text(f"[netdsl.ops]\n{name} = {value}\n")
    return site


def _netdsl(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_an_installed_plugin_is_checked_listed_and_compiled(site, tmp_path):
    net = tmp_path / "scaled.net"
    net.write_text(NETWORK)
    listed = _netdsl(site, "layers", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "learned_scale(init=1.0)\n    Multiplies each channel by a learned factor" in listed.stdout
    checked = _netdsl(site, "check", str(net), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert f"{8 * 27 + 8 + 8 + 8 * 10 + 10:,} parameters" in checked.stdout
    compiled = _netdsl(site, "compile", str(net), "--format", "python", "-o", str(tmp_path / "scaled.py"),
                       cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stderr
    source = (tmp_path / "scaled.py").read_text()
    assert "import netdsl_example_ops.modules" in source
    assert "self.scale = netdsl_example_ops.modules.LearnedScale(8, init=0.5)" in source
    run = subprocess.run([sys.executable, "-c", (
        "import torch, scaled\n"
        "model = scaled.ROOT().eval()\n"
        "assert list(model.state_dict())[2] == 'scale.weight', list(model.state_dict())\n"
        "assert torch.equal(model.scale.weight, torch.full((8, 1, 1), 0.5))\n"
        "x = torch.randn(2, 3, 16, 16)\n"
        "expected = model.fc(torch.relu(model.conv1(x) * 0.5).mean((2, 3)))\n"
        "torch.testing.assert_close(model(x), expected)\n"
        "torch.testing.assert_close(torch.jit.script(model)(x), expected)\n"
        "print('ok')")], capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(tmp_path)])))
    assert run.stdout.strip() == "ok", run.stderr
    pt = _netdsl(site, "compile", str(net), "-o", str(tmp_path / "scaled.pt"), cwd=tmp_path)
    assert pt.returncode == 0, pt.stderr


def test_without_the_package_the_op_is_unknown(tmp_path):
    net = tmp_path / "scaled.net"
    net.write_text(NETWORK)
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", str(net)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "unknown layer or block 'learned_scale'" in result.stderr


def test_load_plugins_in_process(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    try:
        assert layers.load_plugins() == ["learned_scale"]
        op = REGISTRY["learned_scale"]
        assert op.plugin == "netdsl_example_ops:OPS (netdsl-example-ops)"
        assert "learned_scale" not in layers.markdown_table()  # the docs table is netdsl's own ops
    finally:
        REGISTRY.pop("learned_scale", None)


def test_register_op_refuses_clashes_and_bad_names():
    conv = REGISTRY["conv"]
    with pytest.raises(ValueError, match="an op named 'relu' is already registered \\(built in\\)"):
        register_op(dataclasses.replace(conv, name="relu"))
    with pytest.raises(ValueError, match="an op's name must be a plain name, got 'a-b'"):
        register_op(dataclasses.replace(conv, name="a-b"))
    with pytest.raises(TypeError, match="register_op takes a netdsl.layers.LayerDef, got dict"):
        register_op({"name": "x"})
    assert register_op(conv) is conv  # the same definition again is no clash


def test_a_broken_plugin_is_reported_not_fatal(tmp_path, monkeypatch):
    package = tmp_path / "broken_ops"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('boom')\n")
    info = tmp_path / "broken_ops-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-ops\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[netdsl.ops]\nbroken = broken_ops:OPS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(layers, "PLUGIN_ERRORS", [])
    assert layers.load_plugins() == []
    assert layers.PLUGIN_ERRORS == ["netdsl.ops entry point 'broken' (broken_ops:OPS): RuntimeError: boom"]


def test_a_plugin_that_failed_to_load_is_named_where_its_op_is_missing(tmp_path):
    """docs/extending.md: a broken plugin's error is printed by `netdsl layers`, and an unknown
    layer's hint names it (the op may be the one it would have added)."""
    error = "netdsl.ops entry point 'broken' (broken_ops:OPS): RuntimeError: boom"
    source = tmp_path / "uses.net"
    source.write_text("network n {\n  input [3, 8, 8]\n  swish_plus(2)\n}\n")
    layers.PLUGIN_ERRORS.append(error)  # as load_plugins records one
    try:
        with pytest.raises(NetDSLError) as raised:
            netdsl.check(source)
    finally:
        layers.PLUGIN_ERRORS.remove(error)
    assert raised.value.message == "unknown layer or block 'swish_plus'"
    assert raised.value.hint.endswith(f"; 1 op plugin failed to load: {error}")
    result = subprocess.run([sys.executable, "-c", "import sys\nfrom netdsl import cli, layers\n"
                             f"layers.PLUGIN_ERRORS.append({error!r})\nsys.exit(cli.main(['layers', 'relu']))"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("relu")
    assert result.stderr == f"netdsl: warning: an op plugin failed to load: {error}\n"
