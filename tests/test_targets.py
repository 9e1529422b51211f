"""Deployment targets: `netdsl compile --format onnx`, `--optimize`, and the benchmark's code.

Outputs are compared with the PyTorch eval model with BatchNorm running statistics and affine
parameters set to random, non-trivial values, so that folding and export are actually exercised.
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import cli
from netdsl.api import _cxx
from netdsl.emit import build, save_onnx, save_torchscript
from netdsl.optimize import ONEDNN_FILE, conv_bn_pairs, fold_batchnorm

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
TINY = """
network tiny(classes=10) {
  input [3, 32, 32]
  stem: { conv(16, 3, pad=1, bias=false) bn relu }
  unit: residual { conv(16, 3, pad=1) bn relu conv(16, 3, pad=1, bias=false) bn }
  relu
  mixed: inception {
    a1: conv(8, 1) -> a2: bn -> relu
    b1: maxpool(3, stride=1, pad=1) -> b2: conv(8, 1)
  }
  conv(24, 1)
  twice: inception { bn  bn -> relu }
  pool: adaptive_avgpool(1)
  flatten
  fc: linear(classes)
}
"""


def _randomize_batchnorm(model, seed: int = 0):
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2)
    return model.eval()


def _batchnorms(model) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _close(actual, expected, tolerance: float = 1e-4) -> None:
    """Equal within `tolerance`, relative to the output's scale (at least 1)."""
    scale = max(1.0, expected.abs().max().item())
    error = (actual - expected).abs().max().item()
    assert error <= tolerance * scale, f"max |difference| {error:.3g} at output scale {scale:.3g}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.net"
    path.write_text(TINY)
    return path


# ---- ONNX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "resnet18", "googlenet", "mobilenet_v3_small", "efficientnet_b0"])
def test_onnx_matches_pytorch(name, tiny, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    graph = netdsl.check(tiny if name == "tiny" else NETWORKS / f"{name}.net")
    model = _randomize_batchnorm(build(graph))
    path = tmp_path / f"{name}.onnx"
    save_onnx(model, path, graph.input_shape)
    onnx.checker.check_model(onnx.load(str(path)))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    for batch in (1, 3):  # the batch dimension is dynamic
        x = torch.randn(batch, *graph.input_shape)
        with torch.no_grad():
            expected = model(x)  # eval: inception's auxiliary heads are off
        (actual,) = session.run(None, {"input": x.numpy()})
        assert actual.shape == (batch, *graph.output_shape)
        _close(torch.from_numpy(actual), expected)


def test_onnx_from_the_command_line(tiny, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    assert cli.main(["compile", str(tiny), "--format", "onnx", "-o", str(tmp_path / "tiny.onnx")]) == 0
    torch.manual_seed(0)  # the same random weights as the compiled model's
    reference = netdsl.build(tiny).eval()
    session = onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), reference(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]  # one self-contained file


def test_onnx_float16(tiny, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    netdsl.compile(tiny, tmp_path / "tiny.onnx", format="onnx", dtype="float16")
    torch.manual_seed(0)
    reference = netdsl.build(tiny).eval()
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    session = onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 32, 32).half()
    (output,) = session.run(None, {"input": x.numpy()})
    assert output.shape == (2, 10) and str(output.dtype) == "float16"
    with torch.no_grad():
        _close(torch.from_numpy(output).float(), reference(x.float()), tolerance=1e-2)  # float16 rounding


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--dtype", "bfloat16"], "ONNX convolutions have no bfloat16 type"),
    (["--format", "onnx", "--device", "cpu"], "--device does not apply to onnx"),
    (["--format", "python", "--optimize"], "--optimize applies to the torchscript, export and onnx formats"),
])
def test_option_combinations_that_do_not_apply(args, message, tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compile", str(tiny), *args]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_the_exporter_is_a_usage_error(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    assert cli.main(["compile", str(tiny), "--format", "onnx"]) == cli.EXIT_USAGE
    assert "pip install onnx onnxscript" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- AOTInductor -------------------------------------------------------------------------------

def test_aoti_package_loads_and_matches_the_eager_model(tiny, tmp_path):
    """`--format aoti`: compiled C++ in a .pt2 package that loads without the source, at any batch."""
    torch.manual_seed(0)  # compile_file builds the model right after checking: the same weights as below
    _, package = netdsl.compile(tiny, tmp_path / "tiny.pt2", format="aoti")
    torch.manual_seed(0)
    expected_model = netdsl.build(tiny).eval()
    loaded = torch._inductor.aoti_load_package(str(package))
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            _close(loaded(x), expected_model(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt2"]  # nothing else left beside it


def test_aoti_format_options(tiny, tmp_path, monkeypatch, capsys):
    from netdsl.api import format_for

    assert format_for(tmp_path / "x.pt2", "aoti") == "aoti" and format_for(tmp_path / "x.pt2", None) == "export"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXX", "/nonexistent/c++")  # as if no C++ compiler were installed
    assert cli.main(["compile", str(tiny), "--format", "aoti"]) == cli.EXIT_USAGE
    assert "--format aoti compiles C++: it needs a C++ compiler" in capsys.readouterr().err
    assert cli.main(["compile", str(tiny), "--format", "aoti", "-o", "x.onnx"]) == cli.EXIT_USAGE
    assert list(tmp_path.iterdir()) == []


# ---- --optimize ------------------------------------------------------------------------------

def test_fold_pairs_follow_the_graph(tiny):
    # Folded: each bn right after a conv -- in a group, a residual body, an inception branch.
    # Not folded: the two bns of `twice`, which both read the same convolution's output.
    assert list(conv_bn_pairs(netdsl.check(tiny).root)) == [
        ("stem", "0", "1"), ("unit", "0", "1"), ("unit", "3", "4"), ("mixed", "a1", "a2")]


@pytest.mark.parametrize("name, left", [("resnet50", 0), ("mobilenet_v2", 0), ("efficientnet_b0", 0),
                                        ("googlenet", 0), ("tiny", 2)])
def test_optimized_torchscript_matches_eval_model(name, left, tiny, tmp_path):
    graph = netdsl.check(tiny if name == "tiny" else NETWORKS / f"{name}.net")
    model = _randomize_batchnorm(build(graph))
    x = torch.randn(2, 3, 64, 64)  # smaller than declared, to keep the test quick
    with torch.no_grad():
        expected = model(x)
    before = _batchnorms(model)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded, graph) == before - left
    assert _batchnorms(folded) == left
    with torch.no_grad():
        _close(folded(x), expected)
    # What `compile --optimize` saves: channels-last weights, frozen TorchScript.
    save_torchscript(folded.to(memory_format=torch.channels_last), tmp_path / "model.pt", freeze=True)
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    with torch.no_grad():
        _close(loaded(x), expected)


def test_optimize_through_compile(tiny, tmp_path):
    """The whole `compile --optimize` path: same seed, same weights, same outputs as eval."""
    for fmt, suffix in (("torchscript", "pt"), ("export", "pt2"), ("onnx", "onnx")):
        if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            continue
        torch.manual_seed(0)
        netdsl.compile(tiny, tmp_path / f"tiny.{suffix}", format=fmt, optimize=True)
        torch.manual_seed(0)
        reference = netdsl.build(tiny).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            expected = reference(x)
            if fmt == "torchscript":
                actual = torch.jit.load(str(tmp_path / "tiny.pt"))(x)
            elif fmt == "export":
                exported = torch.export.load(str(tmp_path / "tiny.pt2")).module()
                statistics = {key for key in exported.state_dict() if key.endswith("running_mean")}
                assert statistics == {"twice.0.running_mean", "twice.1.running_mean"}  # the unfoldable two
                actual = exported(x)
            else:
                import onnxruntime

                session = onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
                actual = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        _close(actual, expected)


@pytest.mark.parametrize("name, onednn", [("mobilenet_v2", "1"), ("efficientnet_b0", "0")])
def test_optimized_file_loads_with_onednn_where_it_pays_off(name, onednn, tmp_path):
    """`compile --optimize` records whether oneDNN's prepacked convolutions pay off (mobilenet_v2: its
    whole trunk runs in oneDNN's layout; efficientnet_b0: its SiLU and squeeze-excitation convert
    at every block); `netdsl.load` applies them; both the plain and the oneDNN model match eval."""
    path = NETWORKS / f"{name}.net"
    model = _randomize_batchnorm(netdsl.build(path))
    netdsl.compile(path, tmp_path / "model.pt", optimize=True, state_dict=model.state_dict())
    extra = {ONEDNN_FILE: ""}
    plain = torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    assert extra[ONEDNN_FILE] == onednn.encode()
    loaded = netdsl.load(tmp_path / "model.pt")
    onednn_convolutions = loaded.graph.findAllNodes("prim::mkldnn_convolution")
    assert bool(onednn_convolutions) == (onednn == "1"), len(onednn_convolutions)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        _close(plain(x), expected)
        _close(loaded(x), expected)


def test_compile_command_names_the_loader(tiny, tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    assert cli.main(["compile", str(tiny), "-o", str(out), "--optimize"]) == 0
    assert (f"wrote {out} (TorchScript; load with netdsl.load (oneDNN where it pays off) or torch.jit.load; "
            "optimized for inference)") in capsys.readouterr().out


def test_load_leaves_other_files_as_torch_loads_them(tiny, tmp_path):
    netdsl.compile(tiny, tmp_path / "tiny.pt")
    loaded = netdsl.load(tmp_path / "tiny.pt")
    assert not loaded.training and not loaded.graph.findAllNodes("prim::mkldnn_convolution")


def test_compile_loads_a_state_dict(tiny, tmp_path):
    model = _randomize_batchnorm(netdsl.build(tiny))
    netdsl.compile(tiny, tmp_path / "tiny.pt", state_dict=model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _close(torch.jit.load(str(tmp_path / "tiny.pt")).eval()(x), model(x))
    with pytest.raises(RuntimeError, match="Missing key"):
        netdsl.compile(tiny, tmp_path / "other.pt", state_dict={})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_optimize_for_cuda_half_precision(tmp_path):
    path = NETWORKS / "resnet18.net"
    torch.manual_seed(0)
    netdsl.compile(path, tmp_path / "r18.pt", optimize=True, device="cuda", dtype="float16")
    torch.manual_seed(0)
    reference = netdsl.build(path).eval().cuda()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    model = torch.jit.load(str(tmp_path / "r18.pt"), map_location="cuda")
    with torch.no_grad():
        actual = model(x.half())
        expected = reference(x)
    assert actual.dtype == torch.float16 and actual.is_cuda
    _close(actual.float(), expected, tolerance=2e-2)  # float16 rounding, not folding, sets the bound


# ---- the benchmark ---------------------------------------------------------------------------

def test_benchmark_code_runs(tiny, tmp_path, monkeypatch):
    """Every measurement of benchmarks/run.py, once, on a tiny network (no timing asserted)."""
    spec = importlib.util.spec_from_file_location("netdsl_benchmark", ROOT / "benchmarks" / "run.py")
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, benchmark)  # dataclasses look their module up
    spec.loader.exec_module(benchmark)
    bench = benchmark.Bench("tiny", tiny, lambda: build(netdsl.check(tiny)), (3, 32, 32))
    repeats = {"check": 1, "compile": 1, "latency": 1, "throughput": 1}
    results = benchmark.run([bench], repeats, (2,), tmp_path, log=lambda message: None)  # every variant
    results.throughput["tiny", "eager"] = benchmark.measure_throughput(
        bench, "cpu", torch.float32, 2, 1, compiled=False)  # the CUDA code path, run on the CPU
    results.check_all = benchmark.measure_check_all(tiny.parent, 1)
    assert results.check_all == {"files": 1, "seconds": results.check_all["seconds"], "torch_imported": False,
                                 "fresh_seconds": results.check_all["fresh_seconds"]}
    results.check_command["tiny"] = benchmark.measure_check_command(tiny, 1)
    results.variants = benchmark.measure_variants(tiny, {}, 1)
    assert results.variants["variants"] == 1 and results.check_command["tiny"] > 0
    assert set(results.latency) == {("tiny", 2)}
    variants = benchmark.TORCHVISION + benchmark.NETDSL
    if _cxx() is None:  # torch.compile and AOTInductor compile C++
        variants = [variant for variant in variants if variant not in benchmark.COMPILED]
    assert list(results.latency["tiny", 2]) == variants
    prepared = results.prepare["tiny"]
    assert {variant for variant, _ in prepared} == set(variants)
    assert {key for key in prepared if key[1] is not None} == {
        (variant, 2) for variant in benchmark.COMPILED if variant in variants}
    text = benchmark.markdown(results, benchmark.machine(), repeats, benchmark.kept_findings(None))
    for heading in ("## Checking", "## Compiling to TorchScript", "## CPU forward latency", "### tiny",
                    "### netdsl against the best hand-applied recipe", "### Preparing the variants",
                    "## GPU throughput", "## Findings", "| tiny | 2 |", "| netdsl AOTI --optimize |",
                    "`netdsl check networks/tiny.net` in a fresh process", "Variants of `tiny.net` checked per second"):
        assert heading in text
    findings = tmp_path / "RESULTS.md"
    findings.write_text("# old\n\n## Findings\n\nWritten by hand.\n")
    assert benchmark.kept_findings(findings) == "## Findings\n\nWritten by hand.\n"


def test_benchmark_quick_mode_has_a_command_line():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--quick" in result.stdout
