"""The cost model (netdsl/cost.py) against oracles nobody here wrote.

- fvcore: convolution and linear MACs of every torchvision mirror in networks/ equal fvcore's
  `FlopCountAnalysis(...).by_operator()` counts of the torchvision model, exactly;
- the course notes and the papers: receptive fields (AlexNet 195 at the last pool, VGG16 212 at
  pool5, three stacked 3x3 convolutions see 7x7) and depths (ResNet-50 is 50 weight layers deep);
- PyTorch: the emitted module's bias parameters, and the receptive field of every network's final
  feature map measured as the input-gradient support of one output position.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest

import netdsl
from netdsl.catalog import header
from netdsl.cost import Precision, analyse
from netdsl.emit import python_source
from netdsl.layers import REGISTRY

import zoo

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
nn = torch.nn

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
NETWORK_FILES = sorted(NETWORKS.glob("*.net"))
DISTINCT = zoo.distinct()  # a family file that is one of its members is measured as that member
TORCHVISION = [(path, header(path.read_text(encoding="utf-8"))[2]) for path in DISTINCT
               if header(path.read_text(encoding="utf-8"))[1] == "torchvision"]


def _layer(network, path: str):
    return dict(network.layers())[path]


# ---- fvcore --------------------------------------------------------------------------------

@functools.cache
def _fvcore(reference: str, input_shape: tuple[int, ...]) -> dict[str, int]:
    """fvcore's counts per operator for torchvision's `reference` (batch 1, eval mode)."""
    fvcore = pytest.importorskip("fvcore.nn")
    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torchvision's notices about weight initialisation, jit tracing's
        with zoo.empty_on_meta():  # fvcore counts shapes: weights of one element each (zoo.constant)
            model = torchvision.models.get_model(reference, weights=None)
        model = zoo.constant(model).eval()
        analysis = fvcore.FlopCountAnalysis(model, torch.zeros(1, *input_shape))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        return dict(analysis.by_operator())


@pytest.mark.parametrize("path, reference", TORCHVISION, ids=[p.stem for p, _ in TORCHVISION])
def test_conv_and_linear_macs_equal_fvcore(path, reference):
    network = netdsl.check(path)
    aux_heads = {head.name for head in network.aux_heads}  # torchvision runs them in training only
    ours = Counter()
    for layer_path, layer in network.layers():
        if layer_path.split(".")[0] not in aux_heads:
            ours[layer.op] += layer.macs
    theirs = _fvcore(reference, network.input_shape)
    assert ours["conv"] == theirs["conv"]
    assert ours["linear"] == sum(theirs.get(name, 0) for name in ("linear", "addmm", "matmul"))
    assert analyse(network).totals.macs == theirs["conv"] + ours["linear"]  # what `netdsl summary` reports
    assert all(macs == 0 for op, macs in ours.items() if not REGISTRY[op].weight)


# ---- parameters -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn", "googlenet", "mobilenet_v3_large", "alexnet2012",
                                  "inception_resnet_v2"])
def test_biases_are_the_emitted_modules_bias_parameters(name):
    network = netdsl.check(NETWORKS / f"{name}.net")
    totals = analyse(network).totals
    model = netdsl.build(NETWORKS / f"{name}.net")
    biases = sum(p.numel() for key, p in model.named_parameters() if key.endswith(".bias"))
    assert totals.params == sum(p.numel() for p in model.parameters())
    assert totals.biases == biases > 0
    assert totals.weights == totals.params - biases


def test_grouped_and_depthwise_convolutions(tmp_path):
    source = tmp_path / "groups.net"
    source.write_text("network groups {\n  input [32, 8, 8]\n  grouped: conv(64, 3, pad=1, groups=4)\n"
                      "  depthwise: conv(64, 3, pad=1, groups=64, bias=false)\n}\n")
    network = netdsl.check(source)
    costs = analyse(network)
    grouped, depthwise = _layer(network, "grouped"), _layer(network, "depthwise")
    assert (costs[grouped].params, costs[grouped].biases, costs[grouped].macs) == (64 * 8 * 9 + 64, 64, 64 * 8 * 9 * 64)
    assert (costs[depthwise].params, costs[depthwise].biases, costs[depthwise].macs) == (64 * 9, 0, 64 * 9 * 64)
    model = netdsl.build(source)
    assert costs.totals.params == sum(p.numel() for p in model.parameters())


def test_a_reused_module_is_counted_once_but_each_use_computes(tmp_path):
    source = tmp_path / "reuse.net"
    source.write_text("network reuse {\n  input [3, 8, 8]\n  conv1: conv(4, 3, pad=1)\n  act: relu\n"
                      "  conv2: conv(4, 3, pad=1)\n  act: relu\n}\n")
    network = netdsl.check(source)
    costs = analyse(network)
    uses = [node for node in network.root.body if getattr(node, "name", None) == "act"]
    assert [node.shared for node in uses] == [False, True]
    model = netdsl.build(source)
    assert costs.totals.params == (4 * 3 * 9 + 4) + (4 * 4 * 9 + 4) == sum(p.numel() for p in model.parameters())
    assert costs.totals.activations == 4 * 64 * 4  # two convolutions and two activations, 4 x 8 x 8 each


# ---- depth ----------------------------------------------------------------------------------

# The number in a network's name counts its weight layers on the longest path (He et al. 2015,
# Simonyan & Zisserman 2014, Huang et al. 2017); GoogLeNet is "22 layers deep when counting only
# layers with parameters" (Szegedy et al. 2014); Inception-v3 is 48 (Keras applications).
DEPTHS = {"googlenet": 22, "inception_v3": 48}
NAMED_DEPTHS = [p.stem for p in NETWORK_FILES if re.match(r"(resnet|resnext|wide_resnet|preact_resnet|vgg|densenet)\d+",
                                                           p.stem)]


@pytest.mark.parametrize("name", NAMED_DEPTHS + list(DEPTHS))
def test_depth_is_the_number_in_the_name(name):
    expected = DEPTHS.get(name) or int(re.search(r"\d+", name).group())
    assert analyse(netdsl.check(NETWORKS / f"{name}.net")).totals.depth == expected


# ---- receptive fields: the notes ------------------------------------------------------------

def test_alexnet_and_vgg16_receptive_fields_as_published():
    # AlexNet: 195 at the last max pool; VGG16: 212 at pool5 (Araujo, Norris & Sim, "Computing
    # receptive fields of convolutional neural networks", Distill 2019, table of networks).
    for name, path, size in (("alexnet", "features.12", 195), ("vgg16", "features.30", 212)):
        network = netdsl.check(NETWORKS / f"{name}.net")
        field = analyse(network)[_layer(network, path)].field
        assert (field.size, field.stride, field.whole) == ((size, size), (32, 32), False), name


def test_three_stacked_3x3_convolutions_see_7x7(tmp_path):
    # /work/shared/seeds/003_ecbdf2f79515396c.txt:695: "In the first layer, it has a receptive field
    # of 3. In the second layer, the effective receptive field is 5 ... similarly looking at 7x7".
    source = tmp_path / "stack.net"
    source.write_text("network stack {\n  input [3, 32, 32]\n  conv(8, 3, pad=1)\n  relu\n  conv(8, 3, pad=1)\n"
                      "  relu\n  conv(8, 3, pad=1)\n}\n")
    network = netdsl.check(source)
    costs = analyse(network)
    sizes = [costs[layer].field.size for _, layer in network.layers() if layer.op == "conv"]
    assert sizes == [(3, 3), (5, 5), (7, 7)]
    assert costs.feature_map.consumer is None and costs.feature_map.field.size == (7, 7)


def test_global_pooling_reaches_the_whole_input():
    network = netdsl.check(NETWORKS / "resnet50.net")
    costs = analyse(network)
    assert costs[_layer(network, "avgpool")].field.whole
    assert costs[_layer(network, "avgpool")].field.axes is None
    assert not costs.feature_map.field.whole and costs.feature_map.consumer == "avgpool"
    se = analyse(netdsl.check(NETWORKS / "se_resnet50.net")).feature_map.field
    assert se.whole and se.size == (483, 483)  # squeeze-excitation: whole input, plus the local extent


# ---- receptive fields: measured on the emitted module ---------------------------------------
# NOTE: [Measuring a receptive field]
# The receptive field of output position i is the set of input positions its value depends on:
# where d out[i] / d input is non-zero, given weights and inputs that mask nothing. So: every
# conv/linear weight 1/fan_in and biases 0, batch norm in eval mode with unit statistics,
# positive inputs (ReLU passes them), tiny inputs (sigmoid-like gates stay in their linear
# range), eval mode (no dropout). Max pooling sends its gradient to one arg-max per window, so it is
# swapped for average pooling with the same window (same kernel, stride, padding, rounding): the same
# connectivity; a layer norm over each position's channels (which would make equal channels zero)
# for the identity, likewise. The model is built on the meta device and given these weights, and
# only input gradients are computed. The support along the height does not depend on the width,
# so the height is measured on a tall, narrow input [C, N, w] (w: the smallest width the module
# accepts that keeps every layer's rounding as at the declared size) and the width on [C, w, N]; N is the declared
# size plus a multiple of the effective stride, just large enough that the centre output's field
# lies inside the input, so the borders clip nothing. A forward pre-hook on the layer that reads
# the final feature map stops the forward there: the fixed-size classifier never runs.
# The gradient at the far edge of the field is a product of one kernel weight per layer (1/3 for
# each 3x3 convolution on the longest path), far below the gradient at the centre: in float32 the
# backward pass is run a second time with its seed scaled so that the largest input gradient is
# 2**100, which lifts the edge out of underflow; float64 where even that is not enough.

SKIP_FIELD = {
    "resnet1202_cifar": "its receptive field is 5,597 pixels: the measurement needs a ~5,650-row input through "
                        "1,200 convolutions, and the gradient at the field's edge, a product of 1,200 kernel weights "
                        "of 1/3, is below float64's smallest number (1/3 ** 679); resnet20-110_cifar cover its family",
}


class _Stop(Exception):
    def __init__(self, tensor):
        super().__init__("final feature map reached")
        self.tensor = tensor


def _instrumented(network):
    # A module per layer (no F.max_pool2d calls): every max pool can be swapped, every layer hooked;
    # built on the meta device, then given constant weights (`_weight`) of one element each.
    from netdsl.emit import build

    with torch.device("meta"):
        model = build(network, python_source(network, functional=False))
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(module, name, nn.AdaptiveAvgPool2d(child.output_size))
            elif isinstance(child, nn.LayerNorm) or type(child).__name__ == "LayerNorm2d":
                # normalizes each position over its channels: with constant weights every channel is
                # equal and the output zero; the identity reads the same positions
                setattr(module, name, nn.Identity())
    return _weighted(model.eval(), torch.float32)  # input gradients only


def _weight(module, name: str, tensor) -> float:
    if isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight":
        return 1.0 / tensor[0].numel()
    if name.endswith("bias") or name in ("running_mean", "num_batches_tracked"):
        return 0.0  # biases, shifts, running means, counters
    return 1.0  # norms' scales and variances, learned slopes and scales: pass everything


def _weighted(model, dtype):
    """`model` with the constant weights of `_weight` in `dtype`, one element of storage each
    (`zoo.constant`: regnet_y_128gf's 645 M parameters would take 2.6 GB in float32)."""
    return zoo.constant(model, _weight, dtype)


def _symmetric(model) -> bool:
    """Every window square and every padding even-handed: with constant weights, transposing the
    input transposes everything, so the width's support is the height's."""
    def square(value):
        return not isinstance(value, tuple) or len(set(value)) == 1

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)):
            if not all(square(getattr(module, a, 1)) for a in ("kernel_size", "stride", "padding", "dilation")):
                return False
        elif isinstance(module, nn.ZeroPad2d):
            left, right, top, bottom = module.padding
            if (left, right) != (top, bottom):
                return False
    return True


def _feature_map(model, consumer: str | None, x):
    if consumer is None:
        return model(x)

    def stop(module, args):
        raise _Stop(args[0])

    handle = model.get_submodule(consumer).register_forward_pre_hook(stop)
    try:
        model(x)
    except _Stop as reached:
        return reached.tensor
    finally:
        handle.remove()
    raise AssertionError(f"the forward pass never reached {consumer}")


def _narrowest(model, consumer, channels: int, declared: tuple[int, int], steps: tuple[int, int]) -> tuple[int, int]:
    """Small sizes ≡ the declared ones (mod the strides) that the module accepts: every layer then
    rounds as it does at the declared size. (Each axis's arithmetic is independent of the other's.)"""
    for grow in range(max(declared) + 1):
        sizes = tuple((size % step or step) + grow * step for size, step in zip(declared, steps))
        try:
            with torch.no_grad():
                _feature_map(_weighted(model, torch.float32), consumer, torch.ones(1, channels, *sizes))
            return sizes
        except RuntimeError:  # too small for some layer
            continue
    raise AssertionError("the module rejects every size")


def _support(model, consumer, shape: tuple[int, ...], axis: int, centre: int):
    """First and last input position along `axis` (0: height) whose gradient for the output at
    `centre` is non-zero, and the feature map's length along `axis`."""
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(0)).add(1).mul(1e-6)
        x.requires_grad_()
        feature = _feature_map(_weighted(model, dtype), consumer, x)
        picked = (feature[0, :, centre, :] if axis == 0 else feature[0, :, :, centre]).sum()
        picked.backward(retain_graph=dtype == torch.float32)
        if dtype == torch.float32:
            seed = 2.0 ** 100 / x.grad.abs().max()
            x.grad = None
            (picked * seed).backward()
        gradient = x.grad[0].abs().sum(dim=(0, 2) if axis == 0 else (0, 1))
        if torch.isfinite(gradient).all():
            touched = torch.nonzero(gradient).flatten().tolist() or [None]
            yield (touched[0], touched[-1]), feature.shape[2 + axis]


_MEASURED: dict[str, tuple] = {}  # by emitted source: a family file and its default member run once


def _measure(network) -> tuple:
    """(axis, input length, predicted, measured) for each axis measured, where predicted and
    measured are ((first, last) input position of the support, the feature map's length)."""
    feature = analyse(network).feature_map
    model = _instrumented(network)
    channels, declared = network.input_shape[0], network.input_shape[1:]
    narrow = _narrowest(model, feature.consumer, channels, declared, feature.field.stride)
    results = []
    for axis in (0,) if _symmetric(model) and declared[0] == declared[1] else (0, 1):
        field = feature.field.axes[axis]
        # The centre output, on an input where its whole span fits; for a field that is the whole
        # input anyway, output 0, on an input just longer than its local span: half the size.
        whole = feature.field.whole
        grow = 0  # output positions added along the axis; the input grows by `jump` for each
        while True:
            length, size = feature.shape[1 + axis] + grow, declared[axis] + grow * field.jump
            position = 0 if whole else length // 2
            first, last = field.span(position)
            if (whole or first >= 1) and last <= size - 2:
                break
            grow += 1
        expected = (0, size - 1) if whole else (first, last)
        shape = (1, channels, size, narrow[1]) if axis == 0 else (1, channels, narrow[0], size)
        measured = None
        for measured in _support(model, feature.consumer, shape, axis, position):
            if measured[0] == expected:
                break
        results.append((axis, size, (expected, length), measured))
    return tuple(results)


@pytest.mark.parametrize("path", DISTINCT, ids=[p.stem for p in DISTINCT])
def test_receptive_field_matches_the_gradient_support(path):
    if path.stem in SKIP_FIELD:
        pytest.skip(SKIP_FIELD[path.stem])
    network = netdsl.check(path)
    feature = analyse(network).feature_map
    assert feature is not None and feature.field is not None and feature.field.axes is not None
    source = "\n".join(line for line in python_source(network).splitlines() if not line.startswith("#"))
    if source not in _MEASURED:
        _MEASURED[source] = _measure(network)
    for axis, size, expected, measured in _MEASURED[source]:
        assert measured == expected, f"axis {axis}, input length {size}: (support, feature length) measured " \
                                     f"{measured}, predicted {expected}"


def test_training_alone_gives_what_analyse_gives():
    """NOTE: [Training memo]: `cost.training`, skipping the copies of remembered block instances,
    gives `analyse(...).training` for every shipped network and example, in float32 and under
    autocast, with one memo for all of them, and for a sweep's variants sharing the elaboration memo."""
    from netdsl.api import checker
    from netdsl.cost import training

    precisions = [Precision(), Precision("bfloat16", "cpu"), Precision("float16", "cuda")]
    memo: dict = {}
    for path in [*sorted(NETWORKS.glob("*.net")), *sorted((ROOT / "examples").glob("*.net"))]:
        network = zoo.network(path) if path.parent == NETWORKS else netdsl.check(path)
        for precision in precisions:
            assert training(network, precision, memo) == analyse(network, precision).training, (path.name, precision)
    assert memo  # ResNet's bottlenecks, EfficientNet's units... were remembered
    check, memo = checker(NETWORKS / "efficientnet.net"), {}
    for width, depth in [(1.0, 1.0), (1.0, 1.4), (1.2, 1.4), (1.0, 2.0)]:
        network = check(width=width, depth=depth)
        assert training(network, precisions[1], memo) == analyse(network, precisions[1]).training
