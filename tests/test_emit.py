"""The emitter: generated PyTorch source against golden files, TorchScript, atomic writes.

Regenerate the golden files after an intended change with:
    NETDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_emit.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import netdsl
from netdsl.emit import python_source, write_atomically

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
EXPECT = Path(__file__).resolve().parent / "expect"
GOLDEN = ["resnet18", "resnet50"]


@pytest.mark.parametrize("name", GOLDEN)
def test_python_source_matches_golden(name):
    source = python_source(netdsl.check(ROOT / "networks" / f"{name}.net"))
    golden = EXPECT / f"{name}.py"
    if os.environ.get("NETDSL_UPDATE_GOLDEN"):
        golden.write_text(source)
    assert source == golden.read_text(), f"emitted source changed; see {golden}"


def test_source_is_deterministic():
    path = ROOT / "networks" / "resnet34.net"
    assert python_source(netdsl.check(path)) == python_source(netdsl.check(path))


def test_source_imports_only_torch():
    source = python_source(netdsl.check(ROOT / "networks" / "resnet18.net"))
    imports = {line for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"import torch", "from torch import Tensor, nn"}


def _net(tmp_path, body: str, name="n.net") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_inception_and_labelled_groups_emit_and_script(tmp_path):
    path = _net(tmp_path, """
block branchy(a, b) {
  inception {
    branch1: conv(a, 1)
    branch2: { conv(b, 1) relu conv(b, 3, pad=1) }
    branch3: { maxpool(3, stride=1, pad=1) conv(a, 1) }
  }
}
network n {
  input [8, 16, 16]
  mix: branchy(4, 6)
  relu
  head: { adaptive_avgpool(1) flatten linear(5) }
}
""")
    graph = netdsl.check(path)
    assert graph.root.children().__next__().out_shape == (14, 16, 16)
    model = netdsl.build(path).eval()
    keys = [k for k in model.state_dict() if k.endswith("weight")]
    assert keys == ["mix.branch1.weight", "mix.branch2.0.weight", "mix.branch2.2.weight",
                    "mix.branch3.1.weight", "head.2.weight"]
    scripted = torch.jit.script(model)
    x = torch.randn(3, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
        assert tuple(model(x).shape) == (3, 5)


def test_inplace_relu_never_corrupts_a_shared_input(tmp_path):
    # The first relu reads the block input, which the identity also needs: it must not run in place.
    path = _net(tmp_path, """
network n {
  input [4, 8, 8]
  conv0: conv(4, 3, pad=1)
  residual { relu conv(4, 3, pad=1) bn relu }
  inception { relu sigmoid }
}
""")
    model = netdsl.build(path).eval()
    relus = [line.split("= ")[1] for line in python_source(netdsl.check(path)).splitlines() if "F.relu" in line]
    assert relus == ["F.relu(x)", "F.relu(out, inplace=True)", "F.relu(out)"]
    from netdsl.emit import build

    as_modules = build(netdsl.check(path), python_source(netdsl.check(path), functional=False))
    assert [m.inplace for m in as_modules.modules() if isinstance(m, torch.nn.ReLU)] == [False, True, False]
    # Reference computed by hand with functional ops.
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        h = model.conv0(x)
        body = torch.relu(getattr(model, "3")(torch.relu(getattr(model, "2")(torch.relu(h)))))
        out = body + h
        expected = torch.cat([torch.relu(out), torch.sigmoid(out)], 1)
        assert torch.allclose(model(x), expected)


def test_write_atomically_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")

    def failing(tmp):
        Path(tmp).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(target, failing)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


# ---- compile formats -----------------------------------------------------------------------

def _compile(tmp_path, *args):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "netdsl", "compile", *args], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def test_python_format_is_a_standalone_module(tmp_path):
    import importlib.util

    path = ROOT / "networks" / "googlenet.net"
    _compile(tmp_path, str(path), "--format", "python")
    written = tmp_path / "googlenet.py"
    assert written.read_text() == python_source(netdsl.check(path))
    spec = importlib.util.spec_from_file_location("generated_googlenet", written)
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    reference = netdsl.build(path).eval()
    model = generated.ROOT().eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    model.train()
    main, aux = model(x)  # auxiliary heads present in training
    assert len(aux) == 2


def test_export_format_runs_at_any_batch_size(tmp_path):
    path = ROOT / "networks" / "resnet18.net"
    _compile(tmp_path, str(path), "--format", "export", "-D", "classes=10")
    program = torch.export.load(str(tmp_path / "resnet18.pt2"))
    exported = program.module()
    reference = netdsl.build(path, classes=10).eval()
    reference.load_state_dict(exported.state_dict(), strict=True)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            assert (exported(x) - reference(x)).abs().max().item() <= 1e-5


def test_dtype_flag(tmp_path):
    path = ROOT / "networks" / "resnet18.net"
    _compile(tmp_path, str(path), "--dtype", "bfloat16", "-o", "r18.pt")
    model = torch.jit.load(str(tmp_path / "r18.pt")).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        y = model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_flag_cuda_export(tmp_path):
    path = ROOT / "networks" / "mobilenet_v2.net"
    _compile(tmp_path, str(path), "--format", "export", "--device", "cuda", "--dtype", "float16")
    model = torch.export.load(str(tmp_path / "mobilenet_v2.pt2")).module()
    y = model(torch.randn(4, 3, 224, 224, device="cuda", dtype=torch.float16))
    assert y.is_cuda and y.shape == (4, 1000)


# ---- names nobody wrote ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121"])
def test_unlabelled_parameter_free_layers_are_calls_as_in_torchvision(name):
    """torchvision writes `torch.flatten(x, 1)`, `F.relu(x)` and functional pooling in forward: no
    module, so `named_modules()` is torchvision's (it was not: a numbered `nn.Flatten` child)."""
    torchvision = pytest.importorskip("torchvision")
    ours = netdsl.build(ROOT / "networks" / f"{name}.net")
    theirs = torchvision.models.get_model(name, weights=None)
    assert {n for n, _ in ours.named_modules()} == {n for n, _ in theirs.named_modules()}


def test_calls_and_a_module_per_layer_compute_the_same(tmp_path):
    source = tmp_path / "calls.net"
    source.write_text("network calls {\n  input [3, 16, 16]\n  conv(8, 3)\n  relu\n  maxpool(3, stride=2, pad=1, ceil=true)\n"
                      "  stem: { conv(8, 1)  leaky_relu(slope=0.2)  avgpool(2, count_include_pad=false) }\n"
                      "  hardtanh(min=-2, max=2)\n  sigmoid\n  adaptive_maxpool(2)\n  flatten\n  linear(4)\n  tanh\n}\n")
    graph = netdsl.check(source)
    text = python_source(graph)
    assert "import torch.nn.functional as F" in text
    for call in ("F.relu(x, inplace=True)", "F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)",
                 "F.hardtanh(x, min_val=-2.0, max_val=2.0, inplace=True)", "torch.sigmoid(x)",
                 "F.adaptive_max_pool2d(x, (2, 2))", "torch.flatten(x, 1)", "torch.tanh(x)"):
        assert call in text, call
    assert "nn.LeakyReLU(negative_slope=0.2" in text  # inside a group (an nn.Sequential): modules
    from netdsl.emit import build, script

    calls, modules = build(graph).eval(), build(graph, python_source(graph, functional=False)).eval()
    assert [n for n, _ in calls.named_modules()] == ["", "0", "stem", "stem.0", "stem.1", "stem.2", "8"]
    assert len(list(modules.named_modules())) == 14
    modules.load_state_dict(calls.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(calls(x), modules(x))
        assert torch.equal(script(calls)(x), modules(x))


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "mobilenet_v3_small", "shufflenet_v2_x0_5"])
def test_script_saves_the_archive_torch_jit_script_saves(name):
    """NOTE: [Scripting once per class]: the module scripted with the stubs made once per class is
    torch.jit.script's, its code and pickled data byte for byte (weights aside)."""
    import io
    import zipfile

    import torch
    from netdsl.emit import build, script

    model = build(netdsl.check(ROOT / "networks" / f"{name}.net")).eval()

    def archive(scripted) -> dict[str, bytes]:
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        with zipfile.ZipFile(buffer) as zipped:
            return {entry.split("/", 1)[1]: zipped.read(entry) for entry in zipped.namelist()
                    if "/code/" in entry or entry.endswith(".pkl")}

    ours, torchs = archive(script(model)), archive(torch.jit.script(model))
    assert len(ours) > 2 and ours.keys() == torchs.keys()
    assert [entry for entry in ours if ours[entry] != torchs[entry]] == []
