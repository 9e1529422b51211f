"""Every network in networks/: parse, check, emit, script, forward, train — and its reference.

Parametrized over the distinct networks (`tests/zoo.py`: a family file whose defaults are one of
its members is proven the same module and tested as that member); each network's module and
reference are built once for all its tests and released after them, and the forward passes run
at the smallest input the valid-input analysis accepts. Each file names its reference in a
`# reference:` comment (see netdsl/catalog.py), and the tests for a kind of reference are
selected for the networks of that kind at collection (tests/conftest.py):
- torchvision NAME: parameter count, `state_dict` keys/order/shapes identical, torchvision's
  weights (random batch-norm statistics) load with strict=True into the eager module and the
  TorchScript file `netdsl compile` writes, outputs equal in eval mode (max |Δ| ≤ 1e-4);
- timm NAME: parameter count and output shape equal timm's; where the state_dict names match
  timm's too, timm's weights load with strict=True and the outputs are equal;
- paper COUNT: the parameter count derived in the file.
Networks above 200 M parameters are held to the parameter count and the keys (meta device).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import netdsl
from netdsl.catalog import entry, entries, markdown
from netdsl.emit import build, script

import zoo

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
TOLERANCE = 1e-4
BIG = zoo.BIG  # above it: the parameter count and the state_dict keys and shapes only
# A TorchScript module run once: the graph as scripted, without the profiling executor's passes,
# which take seconds on a deep graph's first call (resnet1202_cifar: 5 s, against 0.16 s).
def unoptimized():
    return torch.jit.optimized_execution(False)


@pytest.fixture(scope="module", params=[p.stem for p in zoo.distinct()])
def net(request):
    return entry(NETWORKS / f"{request.param}.net")


class Built:
    """One network's checked graph, our module and the reference, built once for all its tests
    (pytest runs a module-scoped parameter's tests together) and released after them."""

    def __init__(self, item, folder: Path):
        self.item = item
        self.graph = zoo.network(item.file)  # checked once per session (the twins were found with it)
        self.big = self.graph.params > BIG
        self._model = self._reference = None
        self.folder = folder
        self._compiled: Path | None = None

    @property
    def compiled(self) -> Path:
        """The TorchScript file `netdsl compile FILE -o OUT` writes (the command itself is tested in
        tests/test_cli.py), made once for the network's tests."""
        if self._compiled is None:
            _, self._compiled = netdsl.compile(self.item.file, self.folder / f"{self.graph.name}.pt")
            zoo.release_memory()
        return self._compiled

    @property
    def parity(self) -> bool:
        """Whether `test_torchvision_parity` runs for it (and compiles it)."""
        return self.item.reference_kind == "torchvision" and not self.big

    def release(self) -> None:
        if self._compiled is not None:
            self._compiled.unlink(missing_ok=True)  # up to 800 MB each; the disk need not hold them all

    @property
    def model(self):
        if self._model is None:
            self._model = netdsl.build(self.item.file)
        return self._model

    def release_model(self) -> None:
        self._model = None
        zoo.release_memory()

    @property
    def reference(self):
        if self._reference is None:
            self._reference = _reference(self.item)
        return self._reference

    @property
    def small(self):
        """The network at the smallest input it accepts (`zoo.smallest`): the same module unless the
        structure depends on the size, when it is checked (and built) at that size."""
        return zoo.smallest(self.item.file.stem)

    def input(self, batch: int):
        """A batch at the smallest input the declared-size module accepts."""
        shape = self.small.input_shape if self.graph.reads_input_size is None else self.graph.input_shape
        return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def built(net, tmp_path_factory):
    item = Built(net, tmp_path_factory.mktemp(net.file.stem))
    if item.parity:  # compiled first, while nothing else of this network's is in memory: the
        item.compiled  # peak is one model being saved, not that beside the reference and another
    yield item
    item.release()
    del item
    zoo.release_memory()


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _reference(item, device=None):
    """The reference module; with `device="meta"`, its weights on the meta device (`zoo.empty_on_meta`:
    RegNet's builder computes its widths with tensors, which a whole-meta build cannot give back)."""
    torch.manual_seed(0)
    with zoo.empty_on_meta() if device == "meta" else torch.device(device or "cpu"):
        if item.reference_kind == "torchvision":
            return torchvision.models.get_model(item.reference, weights=None)
        if item.reference_kind == "timm":
            timm = pytest.importorskip("timm")
            return timm.create_model(item.reference, pretrained=False)
    return None


def _shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _main(output):
    return output[0] if isinstance(output, tuple) else output


def _informative(state: dict) -> dict:
    """Random batch-norm statistics (not 0 and 1), so that a wrong eps, momentum or affine shows."""
    generator = torch.Generator().manual_seed(2)
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
    return state


def test_declares_a_reference(net):
    assert net.reference_kind in ("torchvision", "timm", "paper"), \
        f"{net.file.name} needs a '# reference: torchvision|timm|paper ...' line"
    assert net.summary, f"{net.file.name} needs a first comment line saying what it is"


@pytest.mark.parametrize("twin", sorted(zoo.twins()), ids=[p.stem for p in sorted(zoo.twins())])
def test_twins_are_the_same_network(twin):
    """A family file checked once, as its default member: it emits the same module, and names the
    same reference, so every oracle run on the member holds for it."""
    member = zoo.twins()[twin]
    assert zoo.structure(twin) == zoo.structure(member)
    assert netdsl.check(twin).params == netdsl.check(member).params
    assert entry(twin).reference == entry(member).reference


def test_eval_forward_and_script(built):
    if built.big:
        pytest.skip(f"{built.graph.params:,} parameters: held to the count and the keys")
    graph, model = built.graph, built.model.eval()
    assert _count(model) == graph.params
    x = built.input(1)
    with torch.no_grad():
        y = model(x)
        assert isinstance(y, torch.Tensor), "eval mode returns only the main output"
        assert tuple(y.shape) == (1, *graph.output_shape)
        assert torch.isfinite(y).all()
        if not built.parity:  # (a torchvision mirror's compiled file: in test_torchvision_parity)
            with unoptimized():
                assert torch.equal(script(model)(x), y)  # TorchScript computes the same


def test_training_step(built):
    if built.big:
        pytest.skip(f"{built.graph.params:,} parameters: held to the count and the keys")
    graph, model, x = built.graph, built.model.train(), built.input(2)
    if graph.reads_input_size is not None:  # its module at the smallest size it builds at (NASNet: 32, not 331)
        graph = built.small
        model, x = build(graph).train(), torch.randn(2, *graph.input_shape)
    output = model(x)
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
    model.zero_grad(set_to_none=True)
    assert not missing


@pytest.mark.reference("paper")
def test_paper_parameter_count(built):
    assert built.graph.params == built.item.paper_params


@pytest.mark.reference("torchvision", "timm")
def test_reference_parameter_count(built):
    if built.big:  # the count and the keys, on the meta device
        reference, ours = _reference(built.item, "meta"), None
        with torch.device("meta"):
            ours = netdsl.build(built.item.file)
        assert built.graph.params == _count(reference) == _count(ours)
        if built.item.reference_kind == "torchvision":
            assert list(_shapes(ours).items()) == list(_shapes(reference).items())
        return
    assert built.graph.params == _count(built.reference)


@pytest.mark.reference("timm")
def test_timm_output_shape_and_weights_where_names_match(built):
    """timm mirrors: the output shape; where the state_dict names are timm's too, timm's weights
    load and every module with parameters computes what timm's does."""
    graph, reference, model = built.graph, built.reference.eval(), built.model.eval()
    x = built.input(1)
    with torch.no_grad():
        assert tuple(_main(reference(x)).shape) == (1, *graph.output_shape)
    if _shapes(model) != _shapes(reference):
        return  # names differ from timm's: the parameter count and the output shape are compared
    state = _informative(reference.state_dict())
    reference.load_state_dict(state)
    model.load_state_dict(state, strict=True)
    # Logits of a randomly initialised deep net can be nearly constant, so compare what every
    # module with parameters computes, by name, not only the output.
    ours_out, theirs_out = _record(model), _record(reference)
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


@pytest.mark.reference("torchvision")
def test_torchvision_parity(built):
    """Same keys, shapes and order; torchvision's weights (with random batch-norm statistics) load
    with strict=True into our module and into the TorchScript file `netdsl compile` writes, and all
    three compute the same outputs in eval mode."""
    if built.big:
        pytest.skip(f"{built.graph.params:,} parameters: held to the count and the keys")
    graph, reference, model = built.graph, built.reference.eval(), built.model.eval()
    ours, theirs = _shapes(model), _shapes(reference)
    assert ours == theirs  # same keys, same shapes
    if not graph.aux_heads:
        # Same order too. Auxiliary heads are registered where they tap the main path, while
        # torchvision's GoogLeNet registers its heads after inception5b: there only the order differs.
        assert list(ours) == list(theirs)
    state = _informative(reference.state_dict())
    reference.load_state_dict(state)
    model.load_state_dict(state, strict=True)
    x = built.input(2)
    with torch.no_grad():
        expected = _main(reference(x))
        eager = model(x)
        assert (eager - expected).abs().max().item() <= TOLERANCE
    # the network's last test: its module goes before the compiled file is loaded (the peak stays
    # at the reference and one more copy of the weights)
    del model
    built.release_model()
    scripted = torch.jit.load(str(built.compiled))
    scripted.load_state_dict(state, strict=True)
    with torch.no_grad(), unoptimized():
        assert torch.equal(scripted.eval()(x), eager)  # TorchScript computes exactly what eager does


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
