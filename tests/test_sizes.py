"""Input sizes: checking at another size (`--input`, `input_shape=`) and the valid-size analysis.

The oracle is torchvision: at each size its model runs (or fails) exactly when netdsl says, and
every module's output shape equals the checked graph's at that size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl.graph import Module
from netdsl.sizes import valid_inputs

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"


def netdsl_cli(*args):
    return subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True)


def _graph_shapes(module: Module, prefix: str = "") -> dict[str, tuple]:
    """Output shape of every named layer and module, keyed by torch module path."""
    shapes = {}
    for child in module.children():
        path = f"{prefix}{child.name}"
        shapes[path] = child.out_shape
        if isinstance(child, Module):
            shapes.update(_graph_shapes(child, f"{path}."))
    return shapes


def _torch_shapes(model, size: tuple[int, ...]) -> tuple[dict[str, tuple], tuple]:
    """Runs `model` on one sample of `size`: the per-sample output shape of every named module
    called once (a module reused within a forward, like torchvision's `relu`, has no one shape),
    and of the model's output."""
    torch = pytest.importorskip("torch")
    shapes, calls, hooks = {}, {}, []
    for name, module in model.named_modules():
        if name:
            def keep(_module, _inputs, output, name=name):
                calls[name] = calls.get(name, 0) + 1
                if isinstance(output, torch.Tensor):
                    shapes[name] = tuple(output.shape[1:])
            hooks.append(module.register_forward_hook(keep))
    with torch.no_grad():
        output = model(torch.zeros(1, *size))
    for hook in hooks:
        hook.remove()
    output = output[0] if isinstance(output, tuple) else output
    return {name: shape for name, shape in shapes.items() if calls[name] == 1}, tuple(output.shape[1:])


@pytest.fixture(scope="module")
def torchvision_models():
    torchvision = pytest.importorskip("torchvision")
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = torchvision.models.get_model(name, weights=None).eval()
        return cache[name]
    return get


# (network file, torchvision name, sizes: (height, width)) -- including odd and non-square sizes
AT_SIZES = [
    ("resnet50", "resnet50", [(160, 160), (333, 97)]),
    ("alexnet", "alexnet", [(256, 256), (63, 63), (300, 227)]),
    ("vgg16", "vgg16", [(32, 32), (64, 97)]),
    ("googlenet", "googlenet", [(193, 161)]),
    ("inception_v3", "inception_v3", [(320, 301)]),
    ("densenet121", "densenet121", [(129, 161)]),
    ("mobilenet_v3_large", "mobilenet_v3_large", [(193, 193)]),
]


@pytest.mark.parametrize("file, reference, sizes", AT_SIZES, ids=[row[0] for row in AT_SIZES])
def test_check_at_size_matches_torchvision(file, reference, sizes, torchvision_models):
    model = torchvision_models(reference)
    declared = netdsl.check(NETWORKS / f"{file}.net")
    for height, width in sizes:
        graph = netdsl.check(NETWORKS / f"{file}.net", input_shape=(3, height, width))
        assert graph.input_shape == (3, height, width)
        assert graph.params == declared.params  # the same weights
        theirs, output = _torch_shapes(model, (3, height, width))
        ours = _graph_shapes(graph.root)
        common = set(ours) & set(theirs)
        assert len(common) > 10, (file, sorted(theirs)[:5])
        # the sizes, from every module both have (channels may differ: a DenseNet layer's module holds the concat)
        assert {k: _sizes(ours[k]) for k in common} == {k: _sizes(theirs[k]) for k in common}, (file, height, width)
        assert graph.output_shape == output


def _sizes(shape: tuple) -> tuple:
    return shape[1:] if len(shape) == 3 else shape


# one below a network's smallest input: torchvision fails there too, in training mode, where the
# auxiliary heads run (Inception-v3's needs a 17 x 17 grid: 299 is its minimum with them)
TOO_SMALL = [("inception_v3", "inception_v3", 298), ("vgg16", "vgg16", 31), ("alexnet", "alexnet", 62),
             ("googlenet", "googlenet", 14)]


@pytest.mark.parametrize("file, reference, size", TOO_SMALL, ids=[row[0] for row in TOO_SMALL])
def test_too_small_fails_like_torchvision(file, reference, size):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.get_model(reference, weights=None).train()
    with pytest.raises(netdsl.NetDSLError, match=f"checked at input \\[3, {size}, {size}\\]"):
        netdsl.check(NETWORKS / f"{file}.net", input_shape=(3, size, size))
    with pytest.raises(RuntimeError):
        model(torch.zeros(2, 3, size, size))
    graph = netdsl.check(NETWORKS / f"{file}.net", input_shape=(3, size + 1, size + 1))  # one more is fine
    model(torch.zeros(2, 3, size + 1, size + 1))
    assert [dimension.minimum for dimension in valid_inputs(graph).dimensions] == [size + 1, size + 1]


def test_fixed_linear_pins_the_size():
    """AlexNet as drawn in 2012 has no adaptive pool: fc6's 9216 weights fix the input."""
    alexnet = NETWORKS / "alexnet2012.net"
    assert netdsl.check(alexnet, input_shape=(3, 230, 230)).output_shape == (1000,)
    with pytest.raises(netdsl.NetDSLError) as caught:
        netdsl.check(alexnet, input_shape=(3, 300, 300))
    assert caught.value.span.line == 50
    assert "fc6: linear has weights for 9216 input features, but at input [3, 300, 300] it receives [16384]" \
        in caught.value.message


def test_channels_are_fixed_by_the_first_layer():
    with pytest.raises(netdsl.NetDSLError, match="conv1: conv has weights for 3 input channels"):
        netdsl.check(NETWORKS / "resnet18.net", input_shape=(1, 224, 224))


def test_input_of_another_rank_is_located():
    with pytest.raises(netdsl.NetDSLError, match=r"input size \[784\] has 1 dimension, but the network declares"):
        netdsl.check(NETWORKS / "resnet18.net", input_shape=(784,))


@pytest.mark.parametrize("bad", [(3, 0, 5), (3, 2.5, 4), ()])
def test_api_rejects_malformed_sizes(bad):
    with pytest.raises(netdsl.api.OptionError):
        netdsl.check(NETWORKS / "resnet18.net", input_shape=bad)


def test_cli_input():
    result = netdsl_cli("check", str(NETWORKS / "resnet18.net"), "--input", "3x320x320")
    assert result.returncode == 0, result.stderr
    assert "input [3, 320, 320] -> output [1000], 11,689,512 parameters" in result.stdout


@pytest.mark.parametrize("text", ["3x0x5", "abc", "3x", "3x-4x4", ""])
def test_cli_malformed_input_is_a_usage_error(text):
    result = netdsl_cli("check", str(NETWORKS / "resnet18.net"), "--input", text)
    assert result.returncode == 2
    assert "--input: expected an input size like 3x224x224" in result.stderr


def test_cli_input_too_small_is_a_located_error():
    result = netdsl_cli("check", str(NETWORKS / "vgg16.net"), "--input", "3x31x31")
    assert result.returncode == 1
    assert "vgg.net:" in result.stderr and "maxpool output would be empty" in result.stderr
    assert "note: checked at input [3, 31, 31] instead of the declared [3, 224, 224]" in result.stderr
    assert "Traceback" not in result.stderr


def test_window_rule_matches_torch_pooling():
    """`layers.window_out` against ATen, including windows that overhang a tiny input in ceil mode
    (GoogLeNet's maxpool4 turns 1 x 1 into 1 x 1)."""
    import itertools

    torch = pytest.importorskip("torch")
    from netdsl.layers import window_out

    for size, kernel, stride, pad, dilation, ceil in itertools.product(
            range(1, 10), range(1, 6), range(1, 4), range(3), (1, 2), (False, True)):
        if 2 * pad > kernel:
            continue
        try:
            expected = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, 1), (kernel, 1), (stride, 1),
                                                      (pad, 0), (dilation, 1), ceil_mode=ceil).shape[2]
        except RuntimeError:  # "output size is too small"
            expected = 0
        assert window_out(size, kernel, stride, pad, dilation, ceil) == expected, (size, kernel, stride, pad, ceil)


# ---- the valid-size analysis --------------------------------------------------------------


def _valid_at(path, input_shape) -> bool:
    """The real checker's answer at one size (the oracle for the fast analysis)."""
    try:
        netdsl.check(path, input_shape=input_shape)
        return True
    except netdsl.NetDSLError:
        return False


def _at(graph, axis: int, size: int) -> tuple[int, ...]:
    shape = list(graph.input_shape)
    shape[axis] = size
    return tuple(shape)


def _spot_sizes(dimension) -> set[int]:
    """Sizes where a wrong summary would show: around the minimum, the maximum, the period."""
    sizes = {dimension.minimum - 1, dimension.minimum, dimension.minimum + 1, dimension.checked}
    if dimension.maximum is not None:
        sizes |= {dimension.maximum, dimension.maximum + 1}
    else:
        sizes |= {dimension.start + dimension.period * 3 + k for k in range(dimension.period + 1)}
    return sizes


ANALYSED = sorted(path for path in NETWORKS.glob("*.net") if path.stem != "nasnet_a_large")


@pytest.mark.parametrize("path", ANALYSED, ids=[path.stem for path in ANALYSED])
def test_analysis_agrees_with_the_checker(path):
    """Every network: at the sizes around each boundary the real checker agrees with the summary."""
    graph = netdsl.check(path)
    report = valid_inputs(graph)
    assert not report.skipped
    for dimension in report.dimensions:
        assert dimension.checked in dimension.valid
        sizes = _spot_sizes(dimension) if dimension.axis < 2 else {dimension.minimum - 1, dimension.minimum}
        for size in sorted(size for size in sizes if size > 0):
            expected = size in dimension.valid if size <= dimension.scanned else None
            assert _valid_at(path, _at(graph, dimension.axis, size)) == expected, (dimension.name, size)


SUMMARIES = [  # the notes' AlexNet: only a small range works; ZFNet likewise; LeNet-5; global pooling
    ("alexnet2012", "valid inputs: 227 <= H <= 258, 227 <= W <= 258 (fc6: linear weights fix its input)"),
    ("zfnet", "valid inputs: 223 <= H <= 254, 223 <= W <= 254 (fc6: linear weights fix its input)"),
    ("lenet5", "valid inputs: 32 <= H <= 35, 32 <= W <= 35 (c5: conv output would be empty; "
               "f6: linear weights fix its input)"),
    ("linear_cifar10", "valid inputs: H = 32, W = 32 (fc: linear weights fix its input)"),
    ("vgg16", "valid inputs: H >= 32, W >= 32 (maxpool at vgg.net:29 in features: output would be empty)"),
    ("resnet152", "valid inputs: H >= 1, W >= 1"),
    ("inception_v3", "valid inputs: H >= 299, W >= 299 (AuxLogits.conv1.conv: conv output would be empty)"),
    ("nasnet_a_large", "valid inputs: not analysed (the network reads a tensor's size at nasnet_a_large.net:79, "
                       "so its structure may change with it; check sizes with --input)"),
]


@pytest.mark.parametrize("file, text", SUMMARIES, ids=[row[0] for row in SUMMARIES])
def test_summaries(file, text):
    assert valid_inputs(netdsl.check(NETWORKS / f"{file}.net")).describe() == text


def test_alexnet_range_against_torch():
    """The emitted AlexNet (2012) runs exactly on 227..258: fc6 takes 256 x 6 x 6 features."""
    torch = pytest.importorskip("torch")
    model = netdsl.build(NETWORKS / "alexnet2012.net").eval()
    for size, works in ((226, False), (227, True), (258, True), (259, False)):
        with torch.no_grad():
            try:
                model(torch.zeros(1, 3, size, 227))
                ran = True
            except RuntimeError:
                ran = False
        assert ran == works, size


DIVISIBLE = """
block halve(out) {
  residual { conv(out, 3, pad=1)  maxpool(2) } shortcut { conv(out, 1, stride=2) }
}
network halves {
  input [3, 64, 48]
  halve(8)
  halve(16)
  adaptive_avgpool(1)
  flatten
  linear(10)
}
"""


def test_divisibility_from_residual_adds(tmp_path):
    """maxpool(2) rounds down, a strided 1x1 conv rounds up: the adds need even sizes, twice."""
    path = tmp_path / "halves.net"
    path.write_text(DIVISIBLE)
    report = valid_inputs(netdsl.check(path))
    assert report.describe() == ("valid inputs: H >= 4 with H % 4 == 0, W >= 4 with W % 4 == 0 "
                                 "(residual at halves.net:3 needs equal sizes)")
    height = report.dimensions[0]
    assert (height.period, height.residues, height.certain) == (4, (0,), True)
    assert [n for n in height.valid if n <= 20] == [4, 8, 12, 16, 20]
    torch = pytest.importorskip("torch")
    model = netdsl.build(path).eval()
    for size in range(8, 30):  # (below 8 one side of an add can be 1 wide, which torch would broadcast)
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, 48))
            ran = True
        except RuntimeError:
            ran = False
        assert ran == (size in height.valid), size


def test_symbolic_input(tmp_path):
    path = tmp_path / "any.net"
    path.write_text("network any(width=8) {\n  input [3, H, W]\n  conv(width, 3, stride=2)\n  relu\n"
                    "  adaptive_avgpool(1)\n  flatten\n  fc: linear(10)\n}\n")
    graph = netdsl.check(path)
    assert graph.input_shape == (3, 224, 224) and graph.input_names == (None, "H", "W")
    assert valid_inputs(graph).describe() == "valid inputs: H >= 3, W >= 3 (conv at any.net:3: output would be empty)"
    assert netdsl.check(path, input_shape=(3, 17, 5)).output_shape == (10,)
    result = netdsl_cli("check", str(path), "--input", "3x17x5")
    assert result.stdout.startswith(f"{path}: ok: network any, input [3, 17, 5] -> output [10]")


@pytest.mark.parametrize("dims, message", [
    ("[C, H, W]", "only the height and width of an input can be symbolic, not 'C'"),
    ("[3, S, S]", "'S' names both the height and the width"),
    ("[F]", "only the height and width of an input can be symbolic, not 'F'"),
    ("[3, widht, 5]", "undefined name 'widht'"),
])
def test_symbolic_input_errors(tmp_path, dims, message):
    path = tmp_path / "bad.net"
    path.write_text(f"network bad(width=8) {{\n  input {dims}\n  conv(width, 3)\n}}\n")
    with pytest.raises(netdsl.NetDSLError) as caught:
        netdsl.check(path)
    assert caught.value.message == message and caught.value.span.line == 2


def test_flat_input(tmp_path):
    path = tmp_path / "mlp.net"
    path.write_text("network mlp {\n  input [784]\n  fc1: linear(100)\n  relu\n  fc2: linear(10)\n}\n")
    assert valid_inputs(netdsl.check(path)).describe() == "valid inputs: F = 784 (fc1: linear weights fix its input)"


def test_cli_prints_and_reports_valid_inputs():
    result = netdsl_cli("check", str(NETWORKS / "alexnet2012.net"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == ("  valid inputs: 227 <= H <= 258, 227 <= W <= 258 "
                                             "(fc6: linear weights fix its input)")
    report = json.loads(netdsl_cli("check", str(NETWORKS / "alexnet2012.net"), "--json").stdout)["valid_inputs"]
    assert report["analysed"] is True
    height = report["dimensions"]["H"]
    assert (height["min"], height["max"], height["checked"], height["proven_beyond_scan"]) == (227, 258, 227, True)
    assert height["limited_by"] == [{"path": "fc6", "op": "linear", "reason": "weights", "message": "",
                                     "file": str(NETWORKS / "alexnet2012.net"), "line": 50}]


KEPT_SHORTCUTS = """
network kept {
  input [3, 16, 16]
  a: residual { conv(8, 3, pad=1)  maxpool(2) }
  b: residual { conv(8, 3, pad=1)  adaptive_avgpool(8) }
  pool: adaptive_avgpool(1)
  flatten
  fc: linear(10)
}
"""


@pytest.mark.parametrize("size, message", [
    # a's projection keeps stride 2: 5 // 2 = 2 against (5 - 1) // 2 + 1 = 3 (a fitted stride 3 would pass)
    (5, "residual add: the body gives [8, 2, 8] but the shortcut gives [8, 3, 8]"),
    # b has no projection at 16 x 16 (its body keeps the size there), so it gets none at 20 x 20 either
    (20, "residual add: the body gives [8, 8, 8] but the shortcut gives [8, 10, 8]"),
])
def test_generated_shortcuts_keep_their_declared_form(tmp_path, size, message):
    path = tmp_path / "kept.net"
    path.write_text(KEPT_SHORTCUTS)
    with pytest.raises(netdsl.NetDSLError) as caught:
        netdsl.check(path, input_shape=(3, size, 16))
    assert caught.value.message == message
    assert size not in valid_inputs(netdsl.check(path)).dimensions[0].valid
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError), torch.no_grad():  # the compiled module agrees
        netdsl.build(path).eval()(torch.zeros(1, 3, size, 16))


def test_analysis_agrees_with_the_checker_on_random_networks(tmp_path):
    """Differential: the fuzzer's random networks (strides, padding, dilation, ceil mode, residuals,
    inception, dense, gates), the summary against the real checker at random sizes."""
    import random

    from netdsl.fuzz import generate

    rng = random.Random(2026)
    compared = 0
    for case in range(25):
        path = tmp_path / f"case{case}.net"
        path.write_text(generate(rng))
        try:
            graph = netdsl.check(path)
        except netdsl.NetDSLError:
            continue
        for dimension in valid_inputs(graph).dimensions:
            sizes = {dimension.minimum - 1, dimension.checked, *(rng.randint(1, dimension.scanned) for _ in range(4))}
            for size in sorted(size for size in sizes if size > 0):
                compared += 1
                assert _valid_at(path, _at(graph, dimension.axis, size)) == (size in dimension.valid), \
                    (path.read_text(), dimension.name, size)
    assert compared > 100


def test_a_scan_too_short_says_so(tmp_path):
    """When the scan cannot cover the periodicity argument, the summary says how far it looked."""
    from netdsl.sizes import _Propagation

    path = tmp_path / "halves.net"
    path.write_text(DIVISIBLE.replace("input [3, 64, 48]", "input [3, 4, 4]"))
    graph = netdsl.check(path)
    height = _Propagation(graph, 1, 8).dimension("H")
    assert (height.scanned, height.valid, height.certain) == (8, [4, 8], False)
    assert height.describe() == "H in {4, 8} (checked up to 8)"
    height = valid_inputs(graph).dimensions[0]  # room for two periods: proven
    assert (height.certain, height.describe()) == (True, "H >= 4 with H % 4 == 0")


def test_huge_sizes_are_not_analysed_and_say_so(tmp_path):
    """issue 13 item 14: `input [1000000] relu linear(2)` took 147 s, `--input 1x1x1000000000` ran out of memory."""
    import time

    from netdsl.sizes import MAX_SCAN, _periodic_tail

    path = tmp_path / "wide.net"
    path.write_text("network wide {\n  input [1000000]\n  relu\n  linear(2)\n}\n")
    started = time.perf_counter()
    sizes = valid_inputs(netdsl.check(path))
    assert sizes.describe() == f"valid inputs: F = 1000000 checked, other sizes not analysed beyond {MAX_SCAN}"
    assert sizes.as_json()["dimensions"]["F"] | {"text": ""} == {
        "analysed": False, "checked": 1000000, "min": None, "max": None, "period": 1, "residues": [],
        "periodic_from": None, "scanned": 0, "proven_beyond_scan": False, "text": "", "limited_by": []}
    path.write_text("network tall {\n  input [1, 1, 8]\n  relu\n}\n")
    sizes = valid_inputs(netdsl.check(path, input_shape=(1, 1, 10**9)))
    assert [dimension.analysed for dimension in sizes.dimensions] == [True, False]
    assert time.perf_counter() - started < 10
    # the period search tries only what can be a period: one valid size in a long tail is fast
    started = time.perf_counter()
    assert _periodic_tail([20000], 40000) == (1, 0, ())
    assert _periodic_tail(list(range(100, 40001, 7)), 40000) == (7, 94, (2,))
    assert time.perf_counter() - started < 1


def test_huge_sizes_from_the_cli():
    result = netdsl_cli("check", "--input", "1x1x1000000000", str(ROOT / "networks" / "resnet18.net"))
    assert result.returncode == 1 and "Traceback" not in result.stderr and "MemoryError" not in result.stderr
