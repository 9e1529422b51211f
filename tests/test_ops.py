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
