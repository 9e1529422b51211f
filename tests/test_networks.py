"""Every network in networks/: parse, check, emit, script, forward, train — and its reference.

Parametrized over the files themselves (adding a file adds its tests). Each file names its
reference in a `# reference:` comment (see netdsl/catalog.py):
- torchvision NAME: parameter count, `state_dict` keys/order/shapes identical, torchvision's
  weights load with strict=True into the eager module and the TorchScript file `netdsl compile`
  writes, outputs equal in eval mode (max |Δ| ≤ 1e-4);
- timm NAME: parameter count and output shape equal timm's; where the state_dict names match
  timm's too, timm's weights load with strict=True and the outputs are equal;
- paper COUNT: the parameter count derived in the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl.catalog import entry, entries, markdown
from netdsl.emit import script

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
NETWORK_FILES = sorted(NETWORKS.glob("*.net"))
TOLERANCE = 1e-4
# Networks over this many parameters are held to their parameter count and state_dict keys and
# shapes only: built with uninitialized weights, never run (keeps the suite's memory and time bounded).
BIG = 200_000_000


@pytest.fixture(scope="module", params=[p.stem for p in NETWORK_FILES])
def net(request):
    return entry(NETWORKS / f"{request.param}.net")


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _big(net) -> bool:
    return net.params > BIG


def _skip_if_big(net) -> None:
    if _big(net):
        pytest.skip(f"over {BIG:,} parameters: held to parameter count and state_dict keys")


def _reference(item):
    torch.manual_seed(0)
    if item.reference_kind == "torchvision" and _big(item):
        with pytest.MonkeyPatch.context() as patch:  # allocation only: no weight initialization
            for name in dir(torch.nn.init):
                if name.endswith("_") and not name.startswith("_"):
                    patch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
            return torchvision.models.get_model(item.reference, weights=None)
    if item.reference_kind == "torchvision":
        return torchvision.models.get_model(item.reference, weights=None)
    if item.reference_kind == "timm":
        timm = pytest.importorskip("timm")
        return timm.create_model(item.reference, pretrained=False)
    return None


def _against_reference(net):
    """The checked graph, the reference and our module (both in eval mode), and their state_dict shapes."""
    graph = netdsl.check(net.file)
    reference = _reference(net).eval()
    model = netdsl.build(net.file).eval()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    return graph, reference, model, ours, theirs


def _main(output):
    return output[0] if isinstance(output, tuple) else output


def test_declares_a_reference(net):
    assert net.reference_kind in ("torchvision", "timm", "paper"), \
        f"{net.file.name} needs a '# reference: torchvision|timm|paper ...' line"
    assert net.summary, f"{net.file.name} needs a first comment line saying what it is"


def test_eval_forward_and_script(net):
    _skip_if_big(net)
    graph = netdsl.check(net.file)
    model = netdsl.build(net.file).eval()
    assert _count(model) == graph.params
    x = torch.randn(1, *graph.input_shape)
    with torch.no_grad():
        y = model(x)
        assert isinstance(y, torch.Tensor), "eval mode returns only the main output"
        assert tuple(y.shape) == (1, *graph.output_shape)
        assert torch.isfinite(y).all()
        scripted = script(model)
        assert torch.equal(scripted(x), y)


def test_training_step(net):
    _skip_if_big(net)
    graph = netdsl.check(net.file)
    model = netdsl.build(net.file).train()
    output = model(torch.randn(2, *graph.input_shape))
    heads = graph.aux_heads
    if heads:
        main, aux = output
        assert len(aux) == len(heads)
        assert [tuple(a.shape[1:]) for a in aux] == [h.out_shape for h in heads]
        loss = main.sum() + sum(a.sum() for a in aux)
    else:
        assert isinstance(output, torch.Tensor)
        loss = output.sum()
    loss.backward()  # in-place activations must not break autograd
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_reference_parameters_and_shape(net):
    graph = netdsl.check(net.file)
    if net.reference_kind == "paper":
        assert graph.params == net.paper_params
        return
    reference = _reference(net).eval()
    assert graph.params == _count(reference)
    if _big(net):
        return
    x = torch.randn(1, *graph.input_shape)
    with torch.no_grad():
        assert tuple(_main(reference(x)).shape) == (1, *graph.output_shape)


def test_timm_weights_where_names_match(net):
    """Where a timm mirror also has timm's state_dict names, timm's weights load and outputs agree."""
    if net.reference_kind != "timm":
        pytest.skip(f"reference is {net.reference_kind}")
    graph, reference, model, ours, theirs = _against_reference(net)
    if ours != theirs:
        pytest.skip("state_dict names differ from timm's; parameter count and output shape are compared")
    state = reference.state_dict()
    for key, value in state.items():  # realistic batch-norm statistics: activations stay informative
        if key.endswith("running_mean"):
            state[key] = torch.randn_like(value) * 0.1
        elif key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
    reference.load_state_dict(state)
    model.load_state_dict(state, strict=True)
    # Logits of a randomly initialised deep net can be nearly constant, so compare what every
    # module with parameters computes, by name, not only the output.
    ours_out, theirs_out = _record(model), _record(reference)
    x = torch.randn(1, *graph.input_shape)
    with torch.no_grad():
        assert (model(x) - _main(reference(x))).abs().max().item() <= TOLERANCE
    assert ours_out.keys() == theirs_out.keys()
    theirs_modules = dict(reference.named_modules())
    compared = 0
    for name, value in ours_out.items():
        # timm fuses some activations into its norm modules (BatchNormAct2d): compare like with like.
        if type(theirs_modules[name]) is not type(dict(model.named_modules())[name]):
            continue
        compared += 1
        scale = max(1.0, theirs_out[name].abs().max().item())
        assert (value - theirs_out[name]).abs().max().item() <= TOLERANCE * scale, name
    assert compared >= len(ours_out) // 3  # most modules are plain convolutions and linears


def _record(model) -> dict:
    """Registers hooks that keep each parameterized module's first output, by module name."""
    outputs = {}

    def hook(key):
        def keep(module, inputs, output) -> None:  # returning a value would replace the output
            outputs.setdefault(key, output.detach().clone())
        return keep

    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            module.register_forward_hook(hook(name))
    return outputs


def test_torchvision_parity(net, tmp_path):
    if net.reference_kind != "torchvision":
        pytest.skip(f"reference is {net.reference_kind}")
    if _big(net):
        with torch.device("meta"):
            model = netdsl.build(net.file)
        theirs = [(k, tuple(v.shape)) for k, v in _reference(net).state_dict().items()]
        assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == theirs
        return
    graph, reference, model, ours, theirs = _against_reference(net)
    assert ours == theirs  # same keys, same shapes
    if not graph.aux_heads:
        # Same order too. Auxiliary heads are registered where they tap the main path, while
        # torchvision's GoogLeNet registers its heads after inception5b: there only the order differs.
        assert list(ours) == list(theirs)
    model.load_state_dict(reference.state_dict(), strict=True)

    compiled = tmp_path / f"{graph.name}.pt"
    result = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(net.file), "-o", str(compiled)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    scripted = torch.jit.load(str(compiled))
    scripted.load_state_dict(reference.state_dict(), strict=True)
    scripted.eval()

    torch.manual_seed(1)
    x = torch.randn(2, *graph.input_shape)
    with torch.no_grad():
        expected = _main(reference(x))
        assert (model(x) - expected).abs().max().item() <= TOLERANCE
        assert (scripted(x) - expected).abs().max().item() <= TOLERANCE


def test_catalog_is_current():
    expected = markdown(entries(NETWORKS))
    readme = NETWORKS / "README.md"
    assert readme.exists() and readme.read_text() == expected, \
        "networks/README.md is stale; run: netdsl catalog networks -o networks/README.md"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchscript_runs_on_cuda(tmp_path):
    path = NETWORKS / "resnet50.net"
    graph, saved = netdsl.compile(path, tmp_path / "resnet50.pt")
    model = torch.jit.load(str(saved), map_location="cuda").eval()
    reference = netdsl.build(path).eval()
    reference.load_state_dict(torch.jit.load(str(saved)).state_dict())
    x = torch.randn(4, *graph.input_shape)
    with torch.no_grad():
        y = model(x.cuda())
        assert y.is_cuda and tuple(y.shape) == (4, *graph.output_shape)
        assert (y.cpu() - reference(x)).abs().max().item() <= 1e-3
