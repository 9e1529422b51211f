"""Every network in networks/: parse, check, emit, script, forward — and parity with its reference.

Parametrized over the files themselves (adding a file adds its tests). Where torchvision has a
model of the same name, the checker's parameter count, the emitted `state_dict` (keys, order and
shapes), strict weight loading (eager and the TorchScript file `netdsl compile` writes) and the
outputs (eval mode, max |Δ| ≤ 1e-4) must all match it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import netdsl

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parent.parent
NETWORK_FILES = sorted((ROOT / "networks").glob("*.net"))
TOLERANCE = 1e-4



@pytest.fixture(scope="module", params=[p.stem for p in NETWORK_FILES])
def net(request):
    path = ROOT / "networks" / f"{request.param}.net"
    graph = netdsl.check(path)
    return path, graph


def _reference(name: str):
    if name not in torchvision.models.list_models(module=torchvision.models):
        return None
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None)


def test_check_and_forward(net):
    path, graph = net
    assert graph.params > 0
    torch.manual_seed(0)
    model = netdsl.build(path).eval()
    assert sum(p.numel() for p in model.parameters()) == graph.params
    x = torch.randn(1, *graph.input_shape)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (1, *graph.output_shape)
    assert torch.isfinite(y).all()


def test_training_step(net):
    path, graph = net
    model = netdsl.build(path).train()
    x = torch.randn(2, *graph.input_shape)
    model(x).sum().backward()  # in-place activations must not break autograd
    assert all(p.grad is not None for p in model.parameters())


def test_torchvision_parity(net, tmp_path):
    path, graph = net
    reference = _reference(graph.name)
    if reference is None:
        pytest.skip(f"torchvision has no model named {graph.name}")
    reference.eval()
    assert graph.params == sum(p.numel() for p in reference.parameters())

    model = netdsl.build(path).eval()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert list(ours) == list(theirs)
    assert ours == theirs
    model.load_state_dict(reference.state_dict(), strict=True)

    compiled = tmp_path / f"{graph.name}.pt"
    result = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(path), "-o", str(compiled)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    scripted = torch.jit.load(str(compiled))
    scripted.load_state_dict(reference.state_dict(), strict=True)
    scripted.eval()

    torch.manual_seed(1)
    x = torch.randn(2, *graph.input_shape)
    with torch.no_grad():
        expected = reference(x)
        assert (model(x) - expected).abs().max().item() <= TOLERANCE
        assert (scripted(x) - expected).abs().max().item() <= TOLERANCE


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchscript_runs_on_cuda(tmp_path):
    path = ROOT / "networks" / "resnet50.net"
    graph, saved = netdsl.compile(path, tmp_path / "resnet50.pt")
    model = torch.jit.load(str(saved), map_location="cuda").eval()
    reference = netdsl.build(path).eval()
    reference.load_state_dict(torch.jit.load(str(saved)).state_dict())
    x = torch.randn(4, *graph.input_shape)
    with torch.no_grad():
        y = model(x.cuda())
        assert y.is_cuda and tuple(y.shape) == (4, *graph.output_shape)
        assert (y.cpu() - reference(x)).abs().max().item() <= 1e-3
