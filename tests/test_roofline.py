"""Latency lower bounds (netdsl/roofline.py, `summary --bound`, `netdsl calibrate`) against torch.

- FLOPs: per conv and linear layer, per module and in total, equal to what
  `torch.utils.flop_counter.FlopCounterMode` counts on the emitted module's inference forward pass
  (it counts convolutions, `mm`/`addmm`/`bmm` and attention; nothing element-wise, no
  normalization, pooling, sums or concatenations — which count 0 FLOPs here too);
- bytes: each layer's, against the tensors a forward pass really reads and writes (forward hooks:
  input, output, parameters), the strided reads and the merges worked out by hand;
- the bound arithmetic, the cache ladder, profiles (shipped, calibrated, files, errors), the
  command line (text, JSON, exit codes, no torch for `summary --bound`) and `calibrate --quick`.
Whether the bounds hold on real hardware is benchmarks/roofline.py's question (docs/cost.md),
not a test's: timing assertions would be flaky.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
import zoo
from netdsl import devices
from netdsl.cost import DEVICE_MEMORY
from netdsl.devices import SHIPPED, Profile
from netdsl.errors import OptionError
from netdsl.roofline import roofline

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
BATCH = 2

# A made-up device with round numbers: 1 TFLOP/s at float32, 4 at bfloat16, 1 GB/s.
ROUND = Profile("round", "a round device", {"float32": 1e12, "bfloat16": 4e12}, 1e9, "made up for the tests")


def _flop_counts(network):
    """FlopCounterMode's FLOPs per module path ("" the whole network) of one eval forward at BATCH."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    model = zoo.uninitialized(network).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(BATCH, *network.input_shape))
    counts = {}
    for name, by_op in counter.get_flop_counts().items():
        if name != "Global":
            counts[name.partition(".")[2]] = sum(by_op.values())  # "Resnet18.layer1.0.conv1" -> its path
    return counts


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "googlenet"])  # residuals, groups, SE, concat, heads
def test_flops_equal_flop_counter_per_layer_module_and_network(name):
    network = zoo.smallest(name)
    counts = _flop_counts(network)
    bounds = roofline(network, ROUND, batch=BATCH)
    assert bounds.total.flops == counts[""] == BATCH * 2 * network.macs  # the heads do not run in eval
    layers = dict(network.layers())
    for path, counted in counts.items():
        if path in layers:  # a conv or linear layer (or a module holding one)
            assert bounds[layers[path]].flops == counted, path
    modules = {path: node for path, node, _ in netdsl.graph.walk(network.root) if node.walk_kind == "module"}
    for path in set(counts) & set(modules):
        assert bounds[modules[path]].flops == counts[path], path
    heads = {head.name for head in network.aux_heads}  # they run in training only
    assert all(path in counts for path, layer in layers.items() if layer.macs and path.split(".")[0] not in heads)


BYTES_NET = """network bytes_net {
  input [3, 16, 16]
  conv1: conv(8, 3, pad=1)
  bn1: bn
  relu1: relu
  pool: maxpool(3, stride=2, pad=1)
  unit: residual {
    conv_a: conv(16, 3, stride=2, pad=1)
    relu_a: relu
  } shortcut down: { conv: conv(16, 1, stride=2) }
  gap: adaptive_avgpool(1)
  flat: flatten
  drop: dropout(0.5)
  fc: linear(10)
}
"""


def test_bytes_are_what_a_forward_pass_reads_and_writes(tmp_path):
    """Each layer module's bytes: its input, output and parameters as torch holds them — but for the
    1x1 stride-2 shortcut, which reads a quarter of its input, the view and the identity in eval."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "bytes_net.net"
    path.write_text(BYTES_NET)
    network = netdsl.check(path)
    layers = dict(network.layers())
    model = zoo.uninitialized(network).eval()
    real = {}

    def hook(name):
        def record(module, inputs, output):
            real[name] = (inputs[0].nbytes, output.nbytes, sum(p.nbytes for p in module.parameters()))
        return record

    for name, module in model.named_modules():
        if name in layers:
            module.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.zeros(BATCH, *network.input_shape))
    bounds = roofline(network, ROUND, batch=BATCH)
    for name, (read, written, weights) in real.items():
        got = bounds[layers[name]].bytes
        if name == "unit.down.conv":  # rows and columns 0, 2, 4, 6 of an 8x8 map: a quarter of it
            assert got == read // 4 + written + weights
        elif name in ("drop", "flat"):  # identity in eval; a view
            assert got == 0
        else:
            assert got == read + written + weights, name
    merge = next(node for _, node, _ in netdsl.graph.walk(network.root) if node.walk_kind == "merge")
    assert bounds[merge].bytes == 3 * BATCH * 4 * 16 * 4 * 4  # the sum reads two [16, 4, 4] maps, writes one
    assert bounds.total.bytes == sum(bounds[node].bytes for node in [*layers.values(), merge])


def test_the_bound_is_the_slower_of_compute_and_memory_summed_over_layers(tmp_path):
    path = tmp_path / "t.net"
    path.write_text("network t {\n  input [4, 8, 8]\n  conv1: conv(8, 3, pad=1, bias=false)\n  relu1: relu\n"
                    "  flat: flatten\n  fc: linear(10, bias=false)\n}\n")
    network = netdsl.check(path)
    layers = dict(network.layers())
    for dtype, size in (("float32", 4), ("bfloat16", 2)):
        for batch in (1, 8):
            bounds = roofline(network, ROUND, dtype, batch)
            peak = ROUND.peak_flops[dtype]
            conv_flops = batch * 2 * (8 * 4 * 9) * 64
            conv_bytes = size * (batch * (4 * 64 + 8 * 64) + 8 * 4 * 9)  # weights once per batch
            assert bounds[layers["conv1"]].flops == conv_flops and bounds[layers["conv1"]].bytes == conv_bytes
            assert bounds[layers["conv1"]].seconds == max(conv_flops / peak, conv_bytes / 1e9)
            relu_bytes = size * batch * 2 * 8 * 64
            assert bounds[layers["relu1"]].seconds == relu_bytes / 1e9 and bounds[layers["relu1"]].limit == "memory"
            assert bounds[layers["relu1"]].intensity == 0
            assert bounds[layers["flat"]].seconds == 0 and bounds[layers["flat"]].limit is None
            fc_flops, fc_bytes = batch * 2 * 512 * 10, size * (batch * (512 + 10) + 5120)
            assert bounds[layers["fc"]].seconds == max(fc_flops / peak, fc_bytes / 1e9)
            total = sum(bounds[layers[name]].seconds for name in ("conv1", "relu1", "fc"))
            assert bounds.total.seconds == pytest.approx(total, rel=1e-12)
            assert bounds.total.memory_nodes == 3 and bounds.total.compute_nodes == 0
            assert bounds.fused_floor <= bounds.total.seconds


def test_a_compute_bound_layer_and_a_module_say_so():
    network = netdsl.check(NETWORKS / "vgg16.net")
    bounds = roofline(network, SHIPPED["t4"], "float32", 64)
    layers = dict(network.layers())
    conv = bounds[layers["features.2"]]  # 64 -> 64 channels, 3x3, at 224x224: 3.7 GFLOPs a sample
    assert conv.limit == "compute" and conv.seconds == conv.flops / 8.1e12
    assert conv.intensity > 8.1e12 / 320e9  # beyond the T4's ridge point
    assert bounds[layers["features.3"]].limit == "memory"  # its ReLU
    assert bounds.total.compute_nodes + bounds.total.memory_nodes == sum(
        1 for node in [*layers.values()] if bounds[node].seconds) + sum(
        1 for _, node, _ in netdsl.graph.walk(network.root) if node.walk_kind == "merge")


def test_cache_ladder_bounds_small_operations_at_the_fastest_rate_from_their_size_up():
    profile = Profile("m", "measured", {"float32": 1e11}, 20e9, "test",
                      cache=((2**18, 60e9), (2**20, 50e9), (2**22, 90e9), (2**24, 40e9), (2**28, 20e9)))
    assert profile.bandwidth_for(10) == 90e9  # below the smallest size: the fastest of all
    assert profile.bandwidth_for(2**19) == 90e9  # 1 MiB's 50 is noise below 4 MiB's 90
    assert profile.bandwidth_for(2**22 + 1) == 90e9
    assert profile.bandwidth_for(2**24) == profile.bandwidth_for(2**25) == 40e9
    assert profile.bandwidth_for(2**30) == 20e9  # beyond the caches: the large copy's rate
    assert SHIPPED["h100"].bandwidth_for(1) == 3.35e12  # a datasheet profile has one rate


# ---- profiles --------------------------------------------------------------------------------

def test_shipped_profiles_are_dense_datasheet_numbers_with_their_sources():
    for name in ("h100", "a100", "rtx4090", "l4"):
        assert name in SHIPPED
    for profile in SHIPPED.values():
        assert "datasheet" in profile.source or "whitepaper" in profile.source
        assert profile.peak_flops["float32"] > 0 and profile.bandwidth > 0
    assert SHIPPED["h100"].peak_flops == {"float32": 494.5e12, "bfloat16": 989.5e12, "float16": 989.5e12}
    assert SHIPPED["a100"].bandwidth == 2.039e12 and SHIPPED["l4"].bandwidth == 300e9
    assert DEVICE_MEMORY == {name: profile.memory_gib for name, profile in SHIPPED.items()}  # --fit's table


def test_find_a_shipped_a_calibrated_and_a_file_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert devices.find("H100") is SHIPPED["h100"]
    directory = tmp_path / "netdsl" / "profiles"
    directory.mkdir(parents=True)
    (directory / "box.json").write_text(json.dumps(ROUND.to_json()))
    assert devices.find("box").peak_flops == ROUND.peak_flops and devices.find("box").name == "box"
    assert "box" in devices.known_names()
    other = tmp_path / "other.json"
    other.write_text(json.dumps(ROUND.to_json()))
    assert devices.find(str(other)).bandwidth == 1e9
    with pytest.raises(OptionError, match=r"no device profile 'h1000': known profiles are h100, h200, .*, box"):
        devices.find("h1000")


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"peak_flops": {"float64": 1}, "bandwidth": 1}', "'peak_flops' names 'float64'"),
    ('{"peak_flops": {"float32": -1}, "bandwidth": 1}', "'peak_flops'.float32 must be a positive number"),
    ('{"peak_flops": {"float32": 1}}', "'bandwidth' must be a positive number"),
    ('{"peak_flops": {"float32": 1}, "bandwidth": 1, "cache_bandwidth": [[1]]}', "'cache_bandwidth' must be"),
])
def test_a_malformed_profile_file_is_an_error_naming_it(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(OptionError, match=f"bad.json: not a device profile: .*{message}"):
        devices.find(str(path))


def test_a_dtype_without_a_peak_is_refused():
    with pytest.raises(OptionError, match=r"profile 'v100' \(NVIDIA V100 SXM2 16GB\) gives no bfloat16 peak"):
        roofline(netdsl.check(NETWORKS / "lenet5.net"), SHIPPED["v100"], "bfloat16")


# ---- the command line ------------------------------------------------------------------------

def _netdsl(capsys, *args) -> tuple[int, str, str]:
    from netdsl import cli

    status = cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_summary_bound_json_carries_the_same_numbers(capsys):
    status, out, err = _netdsl(capsys, "summary", NETWORKS / "resnet50.net", "--bound", "h100", "--dtype", "bfloat16",
                               "--batch", 4, "--json", "--depth", 1)
    assert status == 0, err
    report = json.loads(out)
    bounds = roofline(netdsl.check(NETWORKS / "resnet50.net"), SHIPPED["h100"], "bfloat16", 4)
    assert report["bound"]["seconds"] == bounds.total.seconds and report["bound"]["batch"] == 4
    assert report["bound"]["flops"] == report["totals"]["flops"] == 4 * 2 * 4_089_184_256
    assert report["bound"]["meaning"].startswith("a lower bound, not a prediction")
    rows = report["rows"]
    assert rows[0]["bound"] is None  # the input
    top = [row for row in rows if row["level"] == 0 and row["bound"] is not None]
    assert sum(row["bound"]["seconds"] for row in top) == pytest.approx(bounds.total.seconds, rel=1e-12)
    layer1 = next(row for row in rows if row["path"] == "layer1")
    assert set(layer1["bound"]) == {"flops", "bytes", "intensity", "seconds", "limit"}


def test_summary_bound_text_is_labelled_a_lower_bound(capsys):
    status, out, err = _netdsl(capsys, "summary", NETWORKS / "resnet18.net", "--bound", "a100", "--depth", 1)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split()[-7:] == ["FLOPs", "bytes", "FLOP/B", "bound", "bound", "by", "RF"]
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert "µs" in conv1 and "memory" in conv1
    bounds = roofline(netdsl.check(NETWORKS / "resnet18.net"), SHIPPED["a100"])
    from netdsl.summary import seconds_text

    assert (f"latency: at least {seconds_text(bounds.total.seconds)} on a100 (NVIDIA A100 80GB SXM), float32, "
            "batch 1; a lower bound, not a prediction") in lines
    assert any(line.startswith("  profile a100: NVIDIA A100 Tensor Core GPU datasheet") for line in lines)
    _, one, _ = _netdsl(capsys, "summary", NETWORKS / "resnet18.net", "--bound", "a100", "--depth", 0)
    assert one.count("\n") == 1 and "; latency at least " in one


@pytest.mark.parametrize("args, message", [
    (["--bound", "h1000"], "netdsl: error: --bound: no device profile 'h1000': known profiles are h100, h200, a100"),
    (["--bound", "t4", "--dtype", "bfloat16"], "netdsl: error: --bound: profile 't4' (NVIDIA T4 16GB) gives no "
                                               "bfloat16 peak"),
    (["--bound", "missing.json"], "netdsl: error: --bound: cannot read profile missing.json: No such file"),
])
def test_a_bad_profile_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    status, out, err = _netdsl(capsys, "summary", NETWORKS / "lenet5.net", *args)
    assert status == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_summary_bound_does_not_import_torch(tmp_path):
    code = ("import sys; from netdsl import cli; status = cli.main(['summary', sys.argv[1], '--bound', 'l4', "
            "'--depth', '0']); assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, str(NETWORKS / "resnet18.net")], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "latency at least" in result.stdout


# ---- calibrate -------------------------------------------------------------------------------

def test_calibrate_quick_writes_a_valid_profile(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from netdsl import cli

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli.main(["calibrate", "--quick", "--name", "box"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "netdsl" / "profiles" / "box.json"
    assert f"wrote {path} (use it: netdsl summary FILE --bound box)" in out
    assert "calibrated cpu:" in out and "matmul: float32 " in out
    profile = devices.find("box")
    assert profile.peak_flops["float32"] > 0 and profile.bandwidth > 0 and len(profile.cache) == 3
    assert profile.measured["quick"] is True and profile.measured["device"] == "cpu"
    assert all(rate >= profile.peak_flops["float32"] for rate in profile.peak_flops.values())
    bounds = roofline(netdsl.check(NETWORKS / "lenet5.net"), profile)
    assert bounds.total.seconds > 0


@pytest.mark.parametrize("args, message", [
    (["--name", "h100"], "--name h100: a shipped profile's name"),
    (["--name", "a/b"], "--name 'a/b': use letters, digits"),
    (["--threads", "0"], "--threads must be at least 1"),
])
def test_calibrate_refuses_bad_options(tmp_path, monkeypatch, capsys, args, message):
    from netdsl import cli

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli.main(["calibrate", "--quick", *args]) == 2
    assert message in capsys.readouterr().err


def test_calibrate_cuda_without_a_gpu_is_a_usage_error(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: test_calibrate_cuda measures it")
    from netdsl import cli

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli.main(["calibrate", "--quick", "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is available" in capsys.readouterr().err


@pytest.mark.cuda
def test_calibrate_cuda(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from netdsl import cli

    target = tmp_path / "gpu.json"
    assert cli.main(["calibrate", "--quick", "--device", "cuda", "--name", "gpu", "-o", str(target)]) == 0
    profile = devices.find(str(target))
    assert profile.measured["device"] == "cuda" and profile.measured["float32_matmul"] == "TF32 allowed"
    assert {"float32", "float16"} <= set(profile.peak_flops)


def test_the_docs_name_every_shipped_profile():
    text = (ROOT / "docs" / "cost.md").read_text(encoding="utf-8")
    section = text[text.index("## Latency lower bounds"):]
    assert all(f"`{name}`" in section for name in SHIPPED)
    assert "a lower bound, not a prediction" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_memo_total_is_the_walked_total_for_every_variant():
    """`roofline.total` with a memo (a sweep's) gives exactly `roofline(...).total` for variants that
    share block instances (EfficientNet widths and depths, ResNet depths), and refuses another profile."""
    from netdsl.api import checker, parse_override
    from netdsl.roofline import total

    h100 = devices.find("h100")
    for path, grid in ((NETWORKS / "efficientnet.net", [("width", w, "depth", d) for w in ("1.0", "1.2")
                                                        for d in ("1.0", "1.4", "2.0")]),
                       (NETWORKS / "resnet.net", [("depth", d) for d in ("18", "50", "101", "152")])):
        check, memo = checker(path), {}
        for values in grid:
            network = check(**dict(parse_override(f"{name}={value}") for name, value in zip(values[::2], values[1::2])))
            assert total(network, h100, "bfloat16", 16, memo) == roofline(network, h100, "bfloat16", 16).total
        assert len(memo) > 1  # it remembered instances
        with pytest.raises(ValueError, match="this memo is for h100, bfloat16, batch 16"):
            total(network, h100, "float32", 16, memo)
