"""Permuted tensors, reshapes, per-position linear layers, learned parameters and channel slices.

ConvNeXt's block (`permute`, channels-last `layernorm` and `linear`, `param` layer scale) against
torchvision's own CNBlock, weights loaded by name; the axes rule (NOTE [Axes] in netdsl/layers.py):
what a permuted tensor may reach and the located errors where it may not; receptive fields and
valid input sizes followed through a permute; `reshape` and `param` shape checks; channel slices
`from name[start:stop]` against torch slicing; and the formatter on the new syntax.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import netdsl
from netdsl.cost import analyse
from netdsl.emit import build, python_source, script
from netdsl.errors import ParameterError, ShapeError, TypeError_
from netdsl.fmt import format_source
from netdsl.sizes import valid_inputs

torch = pytest.importorskip("torch")

CNBLOCK = """
block cnblock(scale=1e-6) {
  residual {
    block: {
      conv(in.channels, 7, pad=3, groups=in.channels)
      permute([1, 2, 0])
      layernorm
      linear(4 * in.channels)
      gelu
      linear(in.channels)
      permute([2, 0, 1])
    }
    layer_scale: param([in.channels, 1, 1], init=scale)
  }
}
"""


def _net(tmp_path, body: str, input_shape=(8, 12, 12), prefix: str = ""):
    path = tmp_path / "axes.net"
    path.write_text(f"{prefix}\nnetwork axes {{\n  input {list(input_shape)}\n{body}\n}}\n")
    return path


def test_convnext_block_is_torchvision_cnblock(tmp_path):
    from torchvision.models.convnext import CNBlock

    network = netdsl.check(_net(tmp_path, "  unit: cnblock(0.5)", prefix=CNBLOCK))
    unit = dict(network.layers())
    assert unit["unit.layer_scale"].params == 8 and unit["unit.block.3"].params == 8 * 32 + 32
    assert unit["unit.block.3"].out_shape == (12, 12, 32)  # [H, W, 4C]: a linear at every position
    assert unit["unit.block.3"].macs == 12 * 12 * 8 * 32
    torch.manual_seed(0)
    reference = CNBlock(8, layer_scale=0.5, stochastic_depth_prob=0.0).eval()
    model = build(network).eval()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {f"unit.{k}": tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours["unit.layer_scale"] == (8, 1, 1)
    assert torch.equal(model.state_dict()["unit.layer_scale"], torch.full((8, 1, 1), 0.5))
    model.load_state_dict({f"unit.{k}": v for k, v in reference.state_dict().items()}, strict=True)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-5
        assert torch.equal(script(model)(x), model(x))
    assert sum(p.numel() for p in model.parameters()) == network.params


def test_param_adds_or_multiplies_and_counts(tmp_path):
    network = netdsl.check(_net(tmp_path, "  bias: param([8, 1, 1], init=0.25, op=\"add\")\n  scale: param([12], init=2.0)"))
    layers = dict(network.layers())
    assert (layers["bias"].params, layers["scale"].params, network.params) == (8, 12, 20)
    costs = analyse(network)
    assert costs[layers["bias"]].biases == 8 and costs[layers["scale"]].biases == 0
    model = build(network).eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {"bias": (8, 1, 1), "scale": (12,)}
    x = torch.randn(1, 8, 12, 12)
    assert torch.allclose(model(x), (x + 0.25) * 2.0)
    assert "torch.full((8, 1, 1), 0.25)" in python_source(network)


def test_param_in_an_unlabelled_group_needs_a_class(tmp_path):
    network = netdsl.check(_net(tmp_path, "  g: { conv(8, 1)  param([8, 1, 1]) }"))
    model = build(network)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        "g.0.weight": (8, 8, 1, 1), "g.0.bias": (8,), "g.1": (8, 1, 1)}
    x = torch.randn(1, 8, 12, 12)
    assert torch.equal(script(model)(x), model(x))


def test_receptive_field_and_valid_inputs_follow_a_permute(tmp_path):
    permuted = netdsl.check(_net(tmp_path, "  conv(8, 3, stride=2)  permute([1, 2, 0])  linear(16)  layernorm\n"
                                           "  permute([2, 0, 1])  conv(8, 3)", (3, 33, 33)))
    plain = netdsl.check(_net(tmp_path, "  conv(8, 3, stride=2)  conv(16, 1)  conv(8, 3)", (3, 33, 33)))
    assert analyse(permuted).input_field == analyse(plain).input_field
    assert analyse(permuted)[dict(permuted.layers())["2"]].field.size == (3, 3)  # position-wise, not global
    assert valid_inputs(permuted).describe() == "valid inputs: H >= 7, W >= 7 (conv at axes.net:5: output would be empty)"
    assert valid_inputs(plain).describe() == "valid inputs: H >= 7, W >= 7 (conv at axes.net:4: output would be empty)"
    # a permute that swaps height and width: each dimension's limits follow its own axis
    swapped = netdsl.check(_net(tmp_path, "  permute([0, 2, 1])  relu  permute([0, 2, 1])  conv(4, [5, 1])",
                                (3, 20, 30)))
    assert valid_inputs(swapped).describe() == "valid inputs: H >= 5, W >= 1 (conv at axes.net:4: output would be empty)"


def test_reshape(tmp_path):
    network = netdsl.check(_net(tmp_path, "  flatten  linear(48)  reshape([3, 4, -1])  conv(2, 1)"))
    assert dict(network.layers())["2"].out_shape == (3, 4, 4)
    model = build(network)
    assert tuple(model(torch.randn(2, 8, 12, 12)).shape) == (2, 2, 4, 4)
    assert "a flat or fixed" not in valid_inputs(network).describe()


def test_valid_inputs_stop_at_a_reshape_of_varying_size(tmp_path):
    """A reshape of a tensor whose size follows the input couples the axes (its -1 takes up what
    another axis gives): the one-axis-at-a-time analysis says so rather than claim sizes."""
    network = netdsl.check(_net(tmp_path, "  reshape([-1, 12, 12])\n  conv(4, 1)"))
    analysis = valid_inputs(network)
    assert analysis.dimensions == [] and analysis.skipped.startswith(
        "the network reshapes a tensor whose size follows the input's at axes.net:4")
    pinned = netdsl.check(_net(tmp_path, "  adaptive_avgpool(2)\n  reshape([-1, 4, 1])\n  conv(4, 1)"))
    assert valid_inputs(pinned).describe() == "valid inputs: H >= 1, W >= 1"


@pytest.mark.parametrize("body, cls, message, hint", [
    ("  permute([1, 2, 0])\n  conv(4, 1)", ShapeError,
     "conv expects [channels, height, width] or [features], but this tensor's axes are [height, width, channels] "
     "(per sample [12, 12, 8], from line 4)", "permute it back first"),
    ("  residual { permute([1, 2, 0]) }", ShapeError,
     "a tensor with axes [height, width, channels] (per sample [12, 12, 8], from line 4) cannot end a branch of 'residual'",
     "permute it back"),
    ("  permute([1, 2, 0])\n  tap t", ShapeError, "cannot be named", "permute it back"),
    ("  permute([1, 2, 0])", ShapeError, "cannot leave a chain", "permute it back"),
    ("  permute([1, 1, 0])", ParameterError,
     "permute dims [1, 1, 0] are not an order of the 3 axes of [8, 12, 12] (per sample, without the batch axis)", "permute([1, 2, 0])"),
    ("  permute(1)", TypeError_, "permute: 'dims' expects a list of integers, got int 1", None),
    ("  reshape([5, -1])", ParameterError, "reshape gives [features] or [channels, height, width], not 2 axes", None),
    ("  reshape([5, 5, 5])", ShapeError, "reshape to [5, 5, 5] needs 125 elements, but [8, 12, 12] has 1152", "-1"),
    ("  reshape([-1, 5, 5])", ShapeError, "reshape cannot infer the -1 in [-1, 5, 5]", None),
    ("  param([8, 2, 1])", ParameterError, "param of shape [8, 2, 1] does not broadcast over the input [8, 12, 12]",
     "[8, 1, 1]"),
    ("  param([8, 1, 1], op=\"sub\")", ParameterError, "param: 'op' must be one of", None),
    ("  linear(4)", ShapeError, "linear expects a flat [features] input, got [8, 12, 12]", "permute([1, 2, 0])"),
])
def test_axes_errors(tmp_path, body, cls, message, hint):
    with pytest.raises(cls) as info:
        netdsl.check(_net(tmp_path, body))
    assert message in info.value.message
    if hint:
        assert hint in info.value.hint


def test_channel_slices(tmp_path):
    network = netdsl.check(_net(tmp_path, "  let half = in.channels // 2 - 1\n  tap t\n  inception {\n"
                                          "    from t[0:half] -> conv(4, 1)\n    from t[half:] -> relu\n    from t[:2]\n  }"))
    assert network.output_shape == (4 + 5 + 2, 12, 12)
    model = build(network).eval()
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y[:, 4:9], torch.relu(x[:, 3:]))  # the relu does not overwrite the tapped tensor
        assert torch.equal(y[:, 9:], x[:, :2])
        assert torch.equal(script(model)(x), y)


@pytest.mark.parametrize("body, cls, message", [
    ("  tap t\n  from t[4:2]", ShapeError, "channel slice [4:2] of 't' [8, 12, 12] must satisfy 0 <= start < stop <= 8"),
    ("  tap t\n  from t[0:9]", ShapeError, "must satisfy 0 <= start < stop <= 8"),
    ("  tap t\n  from t[0:2.5]", TypeError_, "a channel slice takes integers, got 2.5"),
    ("  flatten\n  tap t\n  from t[0:2]", ShapeError, "'t[...]' slices channels, but 't' is [1152]"),
])
def test_channel_slice_errors(tmp_path, body, cls, message):
    with pytest.raises(cls) as info:
        netdsl.check(_net(tmp_path, body))
    assert message in info.value.message


def test_formatter_keeps_slices_and_permutes():
    source = ("network n {\n  input [8, 4, 4]\n  tap t\n  inception {\n    from t[0:4]\n    from t[4:] -> relu\n  }\n"
              "  permute([1, 2, 0])\n  permute([2, 0, 1])\n}\n")
    assert format_source(source) == source


def test_cli_reports_a_permuted_conv_without_a_traceback(tmp_path):
    path = _net(tmp_path, "  permute([1, 2, 0])\n  conv(4, 1)")
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "axes.net:5:3: error: conv expects [channels, height, width]" in result.stderr
    assert "Traceback" not in result.stderr
