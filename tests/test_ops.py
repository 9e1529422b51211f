"""The ops beyond the classic CNN set — layernorm, groupnorm, instancenorm, mish, leaky_relu, prelu,
elu, hardtanh, channel_shuffle, conv_transpose, upsample — against what PyTorch really does.

For every op, on representative and seeded random configurations: the checker's output shape,
parameter count and biases, and the emitted module's `state_dict` keys and shapes (as torch
documents them, and as torchvision names them) against a forward pass of the built module; the
TorchScript module's output against the eager one; torchvision's own implementations (ConvNeXt's
`LayerNorm2d`, ShuffleNet's `channel_shuffle`) against the emitted module; conv_transpose MACs
against fvcore; the in-place plan against autograd's version check; receptive fields through
normalization statistics and through upsampling (fractional strides) against input gradients;
and every bad-input error, its message and location.
"""

from __future__ import annotations

import json
import math
import random
import re
import warnings
from pathlib import Path

import pytest

import netdsl
from netdsl.cost import analyse
from netdsl.emit import build, python_source, script
from netdsl.errors import ParameterError, ShapeError, TypeError_
from netdsl.layers import REGISTRY
from netdsl.sizes import valid_inputs

torch = pytest.importorskip("torch")
nn = torch.nn


# ---- helpers -----------------------------------------------------------------------------------

def _network(tmp_path, body: str, input_shape) -> Path:
    path = tmp_path / "ops.net"
    path.write_text(f"network ops {{\n  input {list(input_shape)}\n{body}\n}}\n")
    return path


def _affine(channels: int, bias: bool = True) -> dict:
    return {"weight": [channels], **({"bias": [channels]} if bias else {})}


def _ids(cases) -> list[str]:
    return [f"{case[0]}-{list(case[1])}" for case in cases]


def _agrees_with_torch(tmp_path, call: str, input_shape, state: dict) -> None:
    """`op: CALL` on `input_shape`: the checker's numbers equal the built module's; its `state_dict`
    is `state` ({key: shape}); TorchScript computes what eager does."""
    network = netdsl.check(_network(tmp_path, f"  op: {call}", input_shape))
    layer = dict(network.layers())["op"]
    cost = analyse(network)[layer]
    model = build(network)
    parameters = dict(model.named_parameters())
    assert sum(p.numel() for p in parameters.values()) == layer.params == cost.params == network.params
    assert cost.biases == sum(p.numel() for key, p in parameters.items() if key.endswith(".bias"))
    assert {key: list(value.shape) for key, value in model.state_dict().items()} == {
        f"op.{key}": shape for key, shape in state.items()}
    assert set(parameters) == {f"op.{key}" for key in state if key in ("weight", "bias")}
    torch.manual_seed(0)
    x = torch.randn(2, *input_shape)
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            assert tuple(model(x).shape[1:]) == layer.out_shape == network.output_shape
    with torch.no_grad():
        torch.testing.assert_close(script(model)(x), model(x))
    if not REGISTRY[layer.op].weight:
        assert layer.macs == 0


def _emits(tmp_path, call: str, input_shape, line: str) -> str:
    source = python_source(netdsl.check(_network(tmp_path, f"  op: {call}", input_shape)))
    assert f"        {line}\n" in source
    return source


def _in_place_is_safe(tmp_path, body: str, input_shape, expected: dict) -> None:
    """Which modules the in-place plan runs in place (`expected`: {name: inplace}); and that this is
    safe: autograd's version counter raises if a backward reads a tensor overwritten in place (an
    op's `output_mutable` or `inplace` claimed wrongly), and the gradients equal those of the same
    module with nothing in place."""
    model = build(netdsl.check(_network(tmp_path, body, input_shape)))
    assert {name: module.inplace for name, module in model.named_modules() if hasattr(module, "inplace")} == expected
    reference = build(netdsl.check(_network(tmp_path, body, input_shape)))
    reference.load_state_dict(model.state_dict())
    for module in reference.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    x = torch.randn(2, *input_shape)
    gradients = []
    for candidate in (model, reference):
        candidate.train()
        candidate(x).square().sum().backward()
        gradients.append({key: p.grad for key, p in candidate.named_parameters()})
    for key, gradient in gradients[0].items():
        torch.testing.assert_close(gradient, gradients[1][key], msg=key)


def _fails(tmp_path, body, input_shape, cls, message, column, hint) -> None:
    """`body` (on line 3 of the file, after two spaces) raises `cls` with `message` and `hint`, at
    `column` of its last line."""
    with pytest.raises(cls, match=re.escape(message)) as info:
        netdsl.check(_network(tmp_path, f"  {body}", input_shape))
    error = info.value
    assert type(error) is cls and error.message == message and error.hint == hint
    assert (error.span.line, error.span.column - 2) == (3 + body.count("\n"), column)


# ---- normalization -----------------------------------------------------------------------------

def _random_groupnorms(seed: int = 2024) -> list:
    rng = random.Random(seed)
    cases = []
    for _ in range(4):
        channels = rng.choice([4, 6, 12])
        groups = rng.choice([g for g in range(1, channels + 1) if channels % g == 0])
        cases.append((f"groupnorm({groups})", (channels, rng.randint(1, 4), rng.randint(1, 4)), _affine(channels)))
    return cases


NORMALIZATION = [
    ("layernorm", (6, 3, 4), _affine(6)),
    ("layernorm(eps=1e-5, bias=false)", (6, 3, 4), _affine(6, bias=False)),
    ("layernorm(affine=false)", (6, 3, 4), {}),
    ("layernorm(elementwise_affine=false)", (5,), {}),
    ("layernorm", (10,), _affine(10)),
    ("groupnorm(3)", (6, 3, 3), _affine(6)),
    ("groupnorm(1, eps=1e-3)", (4, 2, 5), _affine(4)),
    ("groupnorm(6, affine=false)", (6, 2, 2), {}),
    ("groupnorm(2)", (8,), _affine(8)),
    ("instancenorm", (3, 4, 4), {}),
    ("instancenorm(affine=true)", (3, 1, 2), _affine(3)),
    ("instancenorm(track_running_stats=true, eps=1e-3)", (3, 4, 2),
     {"running_mean": [3], "running_var": [3], "num_batches_tracked": []}),
] + _random_groupnorms()


@pytest.mark.parametrize("call, input_shape, state", NORMALIZATION, ids=_ids(NORMALIZATION))
def test_normalization_agrees_with_torch(tmp_path, call, input_shape, state):
    _agrees_with_torch(tmp_path, call, input_shape, state)


@pytest.mark.parametrize("call, input_shape, line", [
    ("layernorm", (8, 4, 4), "self.op = LayerNorm2d(8, eps=1e-06)"),
    ("layernorm(eps=1e-5, bias=false)", (8, 4, 4), "self.op = LayerNorm2d(8, bias=False)"),
    ("layernorm(affine=false)", (8,), "self.op = nn.LayerNorm(8, eps=1e-06, elementwise_affine=False)"),
    ("groupnorm(4, eps=1e-6, affine=false)", (8, 4, 4), "self.op = nn.GroupNorm(4, 8, eps=1e-06, affine=False)"),
    ("instancenorm", (8, 4, 4), "self.op = nn.InstanceNorm2d(8)"),
    ("instancenorm(affine=true, track_running_stats=true)", (8, 4, 4),
     "self.op = nn.InstanceNorm2d(8, affine=True, track_running_stats=True)"),
])
def test_normalization_constructors(tmp_path, call, input_shape, line):
    source = _emits(tmp_path, call, input_shape, line)
    assert ("class LayerNorm2d(nn.LayerNorm):" in source) == ("LayerNorm2d(" in line)


def test_layernorm_is_torchvision_convnext_layernorm2d(tmp_path):
    convnext = pytest.importorskip("torchvision.models.convnext")
    network = netdsl.check(_network(tmp_path, "  conv(6, 3, pad=1)\n  norm: layernorm", (3, 5, 4)))
    model = build(network)
    with torch.no_grad():
        model.norm.weight.normal_()
        model.norm.bias.normal_()
    reference = convnext.LayerNorm2d(6, eps=1e-6)  # as ConvNeXt builds it: partial(LayerNorm2d, eps=1e-6)
    reference.load_state_dict(model.norm.state_dict(), strict=True)
    x = torch.randn(2, 6, 5, 4)
    torch.testing.assert_close(model.norm(x), reference(x))
    torch.testing.assert_close(script(model.norm)(x), reference(x))
    manual = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-6)
    weight, bias = (p[:, None, None] for p in (model.norm.weight, model.norm.bias))
    torch.testing.assert_close(model.norm(x), manual * weight + bias)


def test_flat_layernorm_normalizes_the_features(tmp_path):
    model = build(netdsl.check(_network(tmp_path, "  flatten\n  norm: layernorm(eps=1e-5)", (2, 3, 3))))
    x = torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(model(x), nn.functional.layer_norm(x.flatten(1), (18,), eps=1e-5))


def test_normalization_in_place(tmp_path):
    body = """  conv(4, 3, pad=1)
  ln: layernorm
  relu1: relu
  gn: groupnorm(2)
  relu2: relu
  inorm: instancenorm(affine=true)
  relu3: relu
  flatten
  layernorm
  relu4: relu"""
    _in_place_is_safe(tmp_path, body, (3, 6, 6), {"relu1": True, "relu2": True, "relu3": True, "relu4": True})


@pytest.mark.parametrize("body, whole", [
    ("groupnorm(2)", True), ("instancenorm", True), ("instancenorm(track_running_stats=true)", False),
    ("layernorm", False), ("flatten\n  layernorm", True), ("flatten\n  groupnorm(1)", True),
])
def test_normalization_statistics_reach_the_whole_input(tmp_path, body, whole):
    """groupnorm and instancenorm (without running statistics) scale every position by statistics of
    the whole map: the local field goes on, and every input position reaches every output, as a
    squeeze-excitation gate does. layernorm over channels stays local (eval mode throughout)."""
    network = netdsl.check(_network(tmp_path, f"  conv(4, 3, pad=1)\n  {body}", (1, 9, 9)))
    field = analyse(network).nodes[id(network.root.body[-1])].field
    assert field.size == (3, 3) and field.whole is whole
    torch.manual_seed(0)  # random weights: with equal channels, a norm over channels would have no variance
    model = build(network).double().eval()
    x = torch.rand(1, 1, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    out = model(x)
    (out[0, 0, 4, 4] if out.dim() == 4 else out[0, 4 * 9 + 4]).backward()
    touched = torch.nonzero(x.grad[0, 0]).tolist()
    assert len(touched) == (81 if whole else 9)


NORMALIZATION_ERRORS = [
    # (body, input shape, error class, message, column of the error on the body's last line, hint)
    ("groupnorm(4)", (6, 4, 4), ParameterError, "groupnorm channels 6 are not divisible by groups=4", 11,
     "groups must divide 6: 1, 2, 3, 6"),
    ("groupnorm(groups=0)", (6, 4, 4), ParameterError, "groupnorm: 'groups' must be at least 1, got 0", 18, None),
    ("groupnorm", (6, 4, 4), TypeError_, "groupnorm is missing its 'groups' argument (channel groups (1: over all "
     "channels))", 1, "groupnorm(groups, ...)"),
    ("layernorm(eps=true)", (6, 4, 4), TypeError_, "layernorm: 'eps' expects a number, got bool true", 15, None),
    ("instancenorm", (6, 1, 1), ShapeError, "instancenorm needs more than one position per channel, got [6, 1, 1]",
     1, "PyTorch's InstanceNorm2d rejects a 1x1 map in training"),
    ("flatten\n  instancenorm", (6, 2, 2), ShapeError, "instancenorm expects a [channels, height, width] input, "
     "got [24]", 1, "spatial layers must come before 'flatten'"),
]


@pytest.mark.parametrize("body, input_shape, cls, message, column, hint", NORMALIZATION_ERRORS,
                         ids=[case[0].replace("\n  ", " ") for case in NORMALIZATION_ERRORS])
def test_normalization_errors(tmp_path, body, input_shape, cls, message, column, hint):
    _fails(tmp_path, body, input_shape, cls, message, column, hint)


# ---- activations and channel shuffle -----------------------------------------------------------

def _random_shuffles(seed: int = 2025) -> list:
    rng = random.Random(seed)
    cases = []
    for _ in range(4):
        channels = rng.choice([4, 6, 12])
        groups = rng.choice([g for g in range(1, channels + 1) if channels % g == 0])
        cases.append((f"channel_shuffle({groups})", (channels, rng.randint(1, 4), rng.randint(1, 4)), {}))
    return cases


ACTIVATIONS = [
    ("mish", (3, 4, 4), {}),
    ("leaky_relu", (3, 4, 4), {}),
    ("leaky_relu(negative_slope=0.2)", (7,), {}),
    ("elu(alpha=0.5)", (3, 4, 4), {}),
    ("hardtanh(min=-2.5, max=0.5)", (3, 4, 4), {}),
    ("hardtanh(0.0, 6.0)", (3, 4, 4), {}),
    ("prelu", (3, 4, 4), {"weight": [1]}),
    ("prelu(per_channel=true, init=0.1)", (3, 4, 4), {"weight": [3]}),
    ("prelu(per_channel=true)", (9,), {"weight": [9]}),
    ("channel_shuffle(3)", (6, 2, 3), {}),
    ("channel_shuffle(1)", (4, 2, 2), {}),
] + _random_shuffles()


@pytest.mark.parametrize("call, input_shape, state", ACTIVATIONS, ids=_ids(ACTIVATIONS))
def test_activations_and_shuffle_agree_with_torch(tmp_path, call, input_shape, state):
    _agrees_with_torch(tmp_path, call, input_shape, state)


@pytest.mark.parametrize("call, line", [
    ("mish", "self.op = nn.Mish()"),
    ("leaky_relu", "self.op = nn.LeakyReLU()"),
    ("leaky_relu(0.2)", "self.op = nn.LeakyReLU(negative_slope=0.2)"),
    ("elu(2.0)", "self.op = nn.ELU(alpha=2.0)"),
    ("hardtanh(max=3.0)", "self.op = nn.Hardtanh(max_val=3.0)"),
    ("hardtanh(min_val=-3.0, max_val=3.0)", "self.op = nn.Hardtanh(min_val=-3.0, max_val=3.0)"),
    ("prelu", "self.op = nn.PReLU()"),
    ("prelu(per_channel=true, init=0.1)", "self.op = nn.PReLU(num_parameters=8, init=0.1)"),
    ("channel_shuffle(2)", "self.op = nn.ChannelShuffle(2)"),
])
def test_activation_and_shuffle_constructors(tmp_path, call, line):
    _emits(tmp_path, call, (8, 4, 4), line)


def test_activations_compute_what_their_docs_say(tmp_path):
    x = torch.linspace(-4, 4, 81).reshape(1, 1, 9, 9)
    for call, expected in (
        ("mish", x * torch.tanh(nn.functional.softplus(x))),
        ("leaky_relu(0.2)", torch.where(x > 0, x, 0.2 * x)),
        ("elu(alpha=0.5)", torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1))),
        ("hardtanh(-2.0, 1.5)", x.clamp(-2.0, 1.5)),
        ("prelu(init=0.3)", torch.where(x > 0, x, 0.3 * x)),
    ):
        model = build(netdsl.check(_network(tmp_path, f"  {call}", (1, 9, 9))))
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, msg=call)


def test_channel_shuffle_is_torchvision_shufflenet_channel_shuffle(tmp_path):
    shufflenet = pytest.importorskip("torchvision.models.shufflenetv2")
    for channels, groups in ((6, 2), (6, 3), (12, 4), (4, 1), (5, 5)):
        model = build(netdsl.check(_network(tmp_path, f"  channel_shuffle({groups})", (channels, 3, 2))))
        x = torch.randn(2, channels, 3, 2)
        expected = shufflenet.channel_shuffle(x, groups)
        assert torch.equal(model(x), expected) and torch.equal(script(model)(x), expected)
        assert model(x).data_ptr() != x.data_ptr()  # a copy, even for one group: not `aliases_input`


def test_activations_and_shuffle_in_place(tmp_path):
    """After a conv every in-place activation runs in place; after one that did (its backward reads
    its result), the next does not; prelu and channel_shuffle never, but what follows them may."""
    body = """  conv(4, 3, pad=1)
  lrelu: leaky_relu(0.1)
  mish: mish
  conv(4, 3, pad=1)
  mish2: mish
  conv(4, 3, pad=1)
  elu: elu
  prelu: prelu(per_channel=true)
  relu1: relu
  shuffle: channel_shuffle(2)
  hardtanh: hardtanh(-0.5, 0.5)
  residual { conv(4, 3, pad=1) elu2: elu }
  relu2: relu"""
    _in_place_is_safe(tmp_path, body, (3, 6, 6), {"lrelu": True, "mish": False, "mish2": True, "elu": True,
                                                  "relu1": True, "hardtanh": True, "elu2": True, "relu2": True})


def test_default_activations_run_in_place_in_training(tmp_path):
    names = ("mish", "leaky_relu", "elu", "hardtanh")
    model = build(netdsl.check(_network(tmp_path, "\n".join(f"  conv(4, 1)\n  {name}: {name}" for name in names),
                                        (2, 3, 3))))
    assert [model.get_submodule(name).inplace for name in names] == [True] * 4
    x = torch.randn(2, 2, 3, 3, requires_grad=True)
    model(x).sum().backward()  # torch's in-place backward accepts the (non-negative) defaults
    assert x.grad is not None


ACTIVATION_ERRORS = [
    ("leaky_relu(-0.1)", (6, 4, 4), ParameterError, "leaky_relu: 'slope' must be at least 0, got -0.1", 12, None),
    ("elu(alpha=-1.0)", (6, 4, 4), ParameterError, "elu: 'alpha' must be at least 0, got -1.0", 11, None),
    ("hardtanh(min=1.0, max=0.5)", (6, 4, 4), ParameterError, "hardtanh max 0.5 must be greater than min 1.0", 23,
     None),
    ("hardtanh(min=2.0)", (6, 4, 4), ParameterError, "hardtanh max 1.0 must be greater than min 2.0", 1, None),
    ("prelu(per_channel=1)", (6, 4, 4), TypeError_, "prelu: 'per_channel' expects true or false, got int 1", 19,
     None),
    ("channel_shuffle(4)", (6, 4, 4), ParameterError, "channel_shuffle channels 6 are not divisible by groups=4",
     17, None),
    ("flatten\n  channel_shuffle(2)", (6, 4, 4), ShapeError, "channel_shuffle expects a [channels, height, width] "
     "input, got [96]", 1, "spatial layers must come before 'flatten'"),
]


@pytest.mark.parametrize("body, input_shape, cls, message, column, hint", ACTIVATION_ERRORS,
                         ids=[case[0].replace("\n  ", " ") for case in ACTIVATION_ERRORS])
def test_activation_and_shuffle_errors(tmp_path, body, input_shape, cls, message, column, hint):
    _fails(tmp_path, body, input_shape, cls, message, column, hint)


# ---- upsampling --------------------------------------------------------------------------------

def _random_upsampling(seed: int = 2026) -> list:
    """conv_transpose and upsample at random sizes, each valid by PyTorch's rules."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < 10:
        groups = rng.choice([1, 1, 2, 3])
        channels, out = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
        kernel, stride, dilation = ([rng.randint(1, 4) for _ in range(2)] for _ in range(3))
        pad = [rng.randint(0, 2) for _ in range(2)]
        output_pad = [rng.randrange(max(s, d)) for s, d in zip(stride, dilation)]
        size = [rng.randint(1, 5) for _ in range(2)]
        lengths = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1
                   for n, k, s, p, d, o in zip(size, kernel, stride, pad, dilation, output_pad)]
        if min(lengths) < 1:
            continue
        bias = rng.random() < 0.5
        call = (f"conv_transpose({out}, {kernel}, stride={stride}, pad={pad}, output_pad={output_pad}, "
                f"dilation={dilation}, groups={groups}, bias={str(bias).lower()})")
        state = {"weight": [channels, out // groups, *kernel], **({"bias": [out]} if bias else {})}
        cases.append((call, (channels, *size), state))
    for _ in range(4):
        scale = [rng.randint(1, 3), rng.randint(1, 3)]
        mode = rng.choice(["nearest", "bilinear"])
        cases.append((f'upsample({scale}, mode="{mode}")', (2, rng.randint(1, 4), rng.randint(1, 4)), {}))
    return cases


UPSAMPLING = [
    ("upsample", (3, 2, 3), {}),
    ('upsample([2, 3], mode="bilinear")', (3, 2, 3), {}),
    ('upsample(scale_factor=1, mode="bilinear")', (2, 3, 3), {}),
    ("conv_transpose(4, 4, stride=2, pad=1)", (3, 5, 5), {"weight": [3, 4, 4, 4], "bias": [4]}),
    ("conv_transpose(6, [3, 2], stride=[2, 1], padding=[1, 0], output_padding=[1, 0], groups=3, bias=false)",
     (3, 4, 4), {"weight": [3, 2, 3, 2]}),
] + _random_upsampling()


@pytest.mark.parametrize("call, input_shape, state", UPSAMPLING, ids=_ids(UPSAMPLING))
def test_upsampling_agrees_with_torch(tmp_path, call, input_shape, state):
    _agrees_with_torch(tmp_path, call, input_shape, state)


@pytest.mark.parametrize("call, line", [
    ("conv_transpose(4, 3)", "self.op = nn.ConvTranspose2d(8, 4, kernel_size=3)"),
    ("conv_transpose(4, [3, 2], stride=2, pad=1, output_pad=1, dilation=2, groups=4, bias=false)",
     "self.op = nn.ConvTranspose2d(8, 4, kernel_size=(3, 2), stride=2, padding=1, output_padding=1, groups=4, "
     "bias=False, dilation=2)"),
    ("upsample", "self.op = nn.Upsample(scale_factor=2, mode='nearest')"),
    ('upsample([2, 3], mode="bilinear")', "self.op = nn.Upsample(scale_factor=(2, 3), mode='bilinear', "
     "align_corners=False)"),
])
def test_upsampling_constructors(tmp_path, call, line):
    _emits(tmp_path, call, (8, 4, 4), line)


def test_upsample_matches_interpolate(tmp_path):
    x = torch.randn(2, 3, 4, 5)
    for call, kwargs in (("upsample", {"scale_factor": 2, "mode": "nearest"}),
                         ('upsample([3, 2], mode="bilinear")',
                          {"scale_factor": (3, 2), "mode": "bilinear", "align_corners": False})):
        model = build(netdsl.check(_network(tmp_path, f"  {call}", (3, 4, 5))))
        torch.testing.assert_close(model(x), nn.functional.interpolate(x, **kwargs))


CONV_TRANSPOSE = [(call, shape) for call, shape, _ in UPSAMPLING if call.startswith("conv_transpose")]


@pytest.mark.parametrize("call, input_shape", CONV_TRANSPOSE, ids=[call for call, _ in CONV_TRANSPOSE])
def test_conv_transpose_macs_equal_fvcore(tmp_path, call, input_shape):
    fvcore = pytest.importorskip("fvcore.nn")
    network = netdsl.check(_network(tmp_path, f"  op: {call}\n  relu", input_shape))
    layer = dict(network.layers())["op"]
    model = build(network).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = fvcore.FlopCountAnalysis(model, torch.zeros(1, *input_shape))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        counts = dict(analysis.by_operator())
    out, kernel, groups = model.op.out_channels, model.op.kernel_size, model.op.groups
    per_input_position = input_shape[0] // groups * out * math.prod(kernel)  # fvcore: x_shape[2:] * prod(w_shape)
    assert layer.macs == counts["conv"] == per_input_position * math.prod(input_shape[1:])
    assert analyse(network).totals.macs == layer.macs and analyse(network)[layer].depth == 1


def test_upsampling_in_place(tmp_path):
    body = """  up: conv_transpose(4, 2, stride=2)
  relu1: relu
  upsample: upsample(2, mode="bilinear")
  relu2: relu
  nearest: upsample([1, 2])
  relu3: relu"""
    _in_place_is_safe(tmp_path, body, (3, 3, 3), {"relu1": True, "relu2": True, "relu3": True})


# The NOTE [Fractional strides] in netdsl/cost.py: after an upsampling layer the field is a real
# interval that contains every input position an output depends on. Measured as in
# tests/test_cost.py (NOTE [Measuring a receptive field]): weights 1/fan_in, positive inputs, the
# support of an output position's input gradient, here for *every* output row of an input one
# pixel wide.

def _constant_weights(model):
    model = model.double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
    return model


def _supports(model, input_shape, rows: int) -> list:
    """(first, last) input row that each output row's gradient reaches (None: no row)."""
    x = torch.rand(1, *input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1
    rows_of = lambda inputs: model(inputs)[0].sum(dim=(0, 2))  # noqa: E731 - output rows from the input
    jacobian = torch.autograd.functional.jacobian(rows_of, x, vectorize=True)  # [rows, 1, C, H, W]
    reached = jacobian.abs().sum(dim=(1, 2, 4)) > 0
    assert reached.shape[0] == rows
    supports = []
    for row in reached:
        touched = torch.nonzero(row).flatten().tolist()
        supports.append((touched[0], touched[-1]) if touched else None)
    return supports


FIELDS = [  # (body, field size along the height, stride, the most input rows one output's gradient reaches)
    ("conv_transpose(1, [3, 1], stride=[2, 1], pad=[1, 0])", 2, 0.5, 2),
    ("conv_transpose(1, [4, 1], stride=[2, 1], pad=[1, 0])", 2, 0.5, 2),
    ("conv_transpose(1, [5, 1], stride=[2, 1], pad=[2, 0], output_pad=[1, 0])\n  conv(1, [3, 1], pad=[1, 0])",
     4, 0.5, 4),
    ("conv_transpose(1, [3, 1], stride=[2, 1])\n  conv(1, [3, 1], stride=[2, 1])", 3, 1, 3),
    # dilation 2 with stride 3: each output reads one input, the interval holds two
    ("conv_transpose(1, [3, 1], stride=[3, 1], dilation=[2, 1])", 2, 1 / 3, 1),
    ("upsample([2, 1])", 1, 0.5, 1),
    ("upsample([3, 1])", 1, 1 / 3, 1),
    ('upsample([2, 1], mode="bilinear")', 2, 0.5, 2),
    ('upsample([3, 1], mode="bilinear")', 2, 1 / 3, 2),
    ('upsample([4, 1], mode="bilinear")', 2, 0.25, 2),
    ('upsample([1, 1], mode="bilinear")', 1, 1, 1),
    # nearest after a stride 2: an output sees one of the conv's outputs, the interval spans two
    ("conv(1, [3, 1], stride=[2, 1], pad=[1, 0])\n  upsample([2, 1])\n  conv(1, [3, 1], pad=[1, 0])", 6, 1, 5),
    ('conv(1, [3, 1], stride=[4, 1])\n  upsample([2, 1], mode="bilinear")\n  conv(1, [3, 1], pad=[1, 0])\n'
     "  conv_transpose(1, [4, 1], stride=[2, 1], pad=[1, 0])", 16, 1, 15),
    ('upsample([4, 1], mode="bilinear")\n  conv(1, [3, 1], stride=[2, 1])\n  upsample([2, 1], mode="bilinear")',
     4, 0.25, 3),
]


@pytest.mark.parametrize("body, size, stride, widest", FIELDS, ids=[b.replace("\n  ", " ") for b, *_ in FIELDS])
def test_fractional_receptive_field_contains_the_gradient_support(tmp_path, body, size, stride, widest):
    height = 40
    network = netdsl.check(_network(tmp_path, f"  {body}", (1, height, 1)))
    field = analyse(network).feature_map.field
    axis = field.axes[0]
    assert field.size[0] == size and field.stride[0] == pytest.approx(stride)
    supports = _supports(_constant_weights(build(network)), (1, height, 1), network.output_shape[1])
    inside = []
    for position, support in enumerate(supports):
        first, last = axis.span(position)
        if support is not None:
            assert max(first, 0) <= support[0] and support[1] <= min(last, height - 1), (position, support)
        if first >= 0 and last < height:  # not clipped by a border
            inside.append(support[1] - support[0] + 1)
    assert max(inside) == widest <= size


def test_field_through_upsampling_keeps_integers_where_it_can(tmp_path):
    body = "  conv(2, 3, stride=4, pad=1)\n  upsample(2)\n  conv_transpose(2, 2, stride=2)"
    network = netdsl.check(_network(tmp_path, body, (1, 32, 32)))
    costs = analyse(network)
    axes = [costs[layer].field.axes[0] for _, layer in network.layers()]
    assert [(a.size, a.jump, a.start) for a in axes] == [(3, 4, -1), (5, 2, -3), (6, 1, -4)]
    assert all(isinstance(v, int) for a in axes for v in (a.size, a.jump, a.start))
    up = netdsl.check(_network(tmp_path, "  op: upsample([2, 4])", (1, 8, 8)))
    assert json.loads(json.dumps(analyse(up).feature_map.to_json())) == {
        "size": [1, 1], "stride": [0.5, 0.25], "whole_input": False, "at": None, "shape": [1, 16, 32]}


def test_valid_inputs_through_upsampling(tmp_path):
    body = """  residual {
    conv(8, 3, stride=2, pad=1)
    relu
    conv_transpose(3, 4, stride=2, pad=1)
  }
  residual { maxpool(3) upsample(3, mode="bilinear") }"""
    network = netdsl.check(_network(tmp_path, body, (3, 12, 12)))
    assert valid_inputs(network).describe() == (
        "valid inputs: H >= 6 with H % 6 == 0, W >= 6 with W % 6 == 0 (residual at ops.net:3 needs equal sizes)")


def test_upsample_has_a_colour_of_its_own(tmp_path):
    draw = pytest.importorskip("netdsl.draw")
    dot = draw.to_dot(netdsl.check(_network(tmp_path, "  conv(2, 1)\n  upsample", (1, 4, 4)))).source
    assert "#d0e0e3" in dot and "#cfe2f3" in dot


UPSAMPLING_ERRORS = [
    ("conv_transpose(4, 3, groups=4)", (6, 4, 4), ParameterError,
     "conv_transpose input channels 6 are not divisible by groups=4", 29, None),
    ("conv_transpose(3, 3, groups=2)", (6, 4, 4), ParameterError,
     "conv_transpose output channels 3 are not divisible by groups=2", 29, None),
    ("conv_transpose(4, 3, stride=2, output_pad=2)", (6, 4, 4), ParameterError,
     "conv_transpose output_pad 2 must be smaller than its stride 2 or its dilation 1 (along height)", 43, None),
    ("conv_transpose(4, 3, output_pad=[0, 1])", (6, 4, 4), ParameterError,
     "conv_transpose output_pad 1 must be smaller than its stride 1 or its dilation 1 (along width)", 33, None),
    ("conv_transpose(4, 1, pad=[0, 1])", (6, 4, 2), ShapeError, "conv_transpose output would be empty: input "
     "[6, 4, 2], kernel 1, stride 1, pad 1 leave 0 along width", 1, "use less padding or a larger kernel"),
    ("conv_transpose(4, 3, output_pad=-1)", (6, 4, 4), ParameterError,
     "conv_transpose: 'output_pad' must be at least 0, got -1", 33, None),
    ("flatten\n  conv_transpose(4, 3)", (6, 4, 4), ShapeError, "conv_transpose expects a [channels, height, width] "
     "input, got [96]", 1, "spatial layers must come before 'flatten'"),
    ("upsample(0)", (6, 4, 4), ParameterError, "upsample: 'scale' must be at least 1, got 0", 10, None),
    ("upsample(1.5)", (6, 4, 4), TypeError_, "upsample: 'scale' expects an integer or a list of two integers, got "
     "float 1.5", 10, "use // for integer division, or floor()/round()"),
    ('upsample(mode="bicubic")', (6, 4, 4), ParameterError,
     "upsample: 'mode' must be one of \"nearest\", \"bilinear\", got \"bicubic\"", 15, None),
    ("flatten\n  upsample", (6, 4, 4), ShapeError, "upsample expects a [channels, height, width] input, got [96]", 1,
     "spatial layers must come before 'flatten'"),
]


@pytest.mark.parametrize("body, input_shape, cls, message, column, hint", UPSAMPLING_ERRORS,
                         ids=[case[0].replace("\n  ", " ") for case in UPSAMPLING_ERRORS])
def test_upsampling_errors(tmp_path, body, input_shape, cls, message, column, hint):
    _fails(tmp_path, body, input_shape, cls, message, column, hint)


# ---- the registry entries ----------------------------------------------------------------------

def test_only_conv_transpose_is_a_weight_layer_and_every_new_op_has_its_family():
    new = ["layernorm", "groupnorm", "instancenorm", "mish", "leaky_relu", "prelu", "elu", "hardtanh",
           "channel_shuffle", "conv_transpose", "upsample"]
    assert [name for name in new if REGISTRY[name].weight] == ["conv_transpose"]
    assert {name: REGISTRY[name].family for name in new} == {
        "layernorm": "norm", "groupnorm": "norm", "instancenorm": "norm", "mish": "activation",
        "leaky_relu": "activation", "prelu": "activation", "elu": "activation", "hardtanh": "activation",
        "channel_shuffle": None, "conv_transpose": "conv", "upsample": "upsample"}
    assert [name for name in new if REGISTRY[name].inplace] == ["mish", "leaky_relu", "elu", "hardtanh"]
    assert not any(REGISTRY[name].aliases_input or REGISTRY[name].folds_after for name in new)
