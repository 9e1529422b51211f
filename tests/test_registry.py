"""The registries are the only place an op or a combinator is defined: one registered here, in the
test, goes through every stage — check, cost, input sizes, summary, drawing, emission, TorchScript,
`netdsl layers`, LSP completion — with no other file touched (docs/architecture.md)."""

from __future__ import annotations

import pytest

import netdsl
from netdsl import cli
from netdsl.combinators import COMBINATORS, CombinatorDef, DrawSpec
from netdsl.cost import analyse
from netdsl.emit import build, python_source, script
from netdsl.layers import REGISTRY, Emission, LayerDef, LayerProblem, Param
from netdsl.sizes import valid_inputs
from netdsl.summary import input_row, rows
from netdsl.text import shape_text

draw = pytest.importorskip("netdsl.draw")

CHANNEL_SCALE = '''class ChannelScale(nn.Module):
    """Multiplies every channel by a learned factor (initially `init`)."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight'''


def _channel_scale_shape(in_shape, args):
    if len(in_shape) != 3:
        raise LayerProblem(f"channel_scale expects [channels, height, width], got {shape_text(in_shape)}")
    return in_shape


CHANNEL_SCALE_OP = LayerDef(
    name="channel_scale", doc="Multiplies each channel by a learned factor (a throwaway op of the tests).",
    params=(Param("init", "float", 1.0, doc="initial factor", aliases=("start",)),),
    shape=_channel_scale_shape,
    count=lambda s, a: s[0],
    macs=lambda s, o, a: s[0] * s[1] * s[2],
    torch=lambda s, a: Emission("ChannelScale", (s[0], a["init"]), helper=True),
    helper_source=CHANNEL_SCALE, weight=True,
)


def _maximum_shape(in_shape, arms):
    if any(shape != arms[0] for shape in arms):
        raise LayerProblem(f"maximum: the branches give {', '.join(map(shape_text, arms))}",
                           hint="element-wise maximum needs identical shapes")
    return arms[0]


def _maximum_emit(writer, merge, source):
    branches = [writer.chain(arm, source, writer.fresh(f"branch{i + 1}")) for i, arm in enumerate(merge.arms)]
    out = writer.fresh("out")
    expression = branches[0]
    for branch in branches[1:]:
        expression = f"torch.maximum({expression}, {branch})"
    writer.line(f"{out} = {expression}")
    return out


MAXIMUM = CombinatorDef(
    keyword="maximum", doc="the element-wise maximum of its branches (a throwaway combinator of the tests)",
    body="branches", shape=_maximum_shape, emit=_maximum_emit, label="max", type_name="Maximum",
    draw=DrawSpec("max", "element-wise maximum", columns=True),
)


@pytest.fixture
def channel_scale():
    REGISTRY[CHANNEL_SCALE_OP.name] = CHANNEL_SCALE_OP
    yield CHANNEL_SCALE_OP
    del REGISTRY[CHANNEL_SCALE_OP.name]


@pytest.fixture
def maximum():
    COMBINATORS[MAXIMUM.keyword] = MAXIMUM
    yield MAXIMUM
    del COMBINATORS[MAXIMUM.keyword]


def _write(tmp_path, body: str):
    path = tmp_path / "t.net"
    path.write_text(f"network t {{\n  input [3, 8, 8]\n{body}\n}}\n")
    return path


def test_a_new_op_is_one_registry_entry(tmp_path, channel_scale, capsys):
    torch = pytest.importorskip("torch")
    path = _write(tmp_path, "  conv1: conv(4, 3, pad=1)\n  scale: channel_scale(start=0.5)\n  relu")
    network = netdsl.check(path)
    layer = dict(network.layers())["scale"]
    assert (layer.op, layer.args, layer.out_shape) == ("channel_scale", {"init": 0.5}, (4, 8, 8))
    assert network.params == (4 * 3 * 9 + 4) + 4
    assert network.macs == 4 * 3 * 9 * 64 + 4 * 64
    costs = analyse(network)
    assert costs[layer].params == 4 and costs[layer].macs == 256 and costs[layer].depth == 2  # a weight layer
    assert [row.kind for row in rows(network, costs, 2)] == ["conv", "channel_scale", "relu"]
    assert valid_inputs(network).dimensions[0].minimum == 1
    dot = draw.to_dot(network).source
    assert "channel_scale" in dot and "4 params" in dot

    source = python_source(network)
    assert "class ChannelScale(nn.Module):" in source and "self.scale = ChannelScale(4, 0.5)" in source
    model = build(network)
    assert sum(p.numel() for p in model.parameters()) == network.params
    assert list(dict(model.named_parameters())) == ["conv1.weight", "conv1.bias", "scale.weight"]
    x = torch.randn(2, 3, 8, 8)
    expected = torch.relu(model.conv1(x) * 0.5)
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(script(model)(x), expected)

    bad = _write(tmp_path, "  flatten\n  channel_scale")
    with pytest.raises(netdsl.ShapeError, match=r"channel_scale expects \[channels, height, width\], got \[192\]"):
        netdsl.check(bad)

    assert cli.main(["layers"]) == 0
    assert "channel_scale(init=1.0)\n    Multiplies each channel" in capsys.readouterr().out
    lsp = pytest.importorskip("netdsl.lsp")
    text = "network t {\n  input [3, 8, 8]\n  channel_scale(\n}\n"
    labels = [item.label for item in lsp.completions(text, text.index("(") + 1, None)]
    assert "init=" in labels and "channel_scale" in labels


def test_a_new_combinator_is_one_registry_entry(tmp_path, maximum):
    torch = pytest.importorskip("torch")
    path = _write(tmp_path, "  m: maximum {\n    wide: conv(4, 3, pad=1)\n    narrow: conv(4, 1)\n  }\n  relu")
    network = netdsl.check(path)
    (module, relu) = network.root.body
    assert module.type_name == "Maximum" and module.out_shape == (4, 8, 8)
    (merge,) = module.body
    assert merge.kind == "maximum" and [arm[0].name for arm in merge.arms] == ["wide", "narrow"]
    assert network.params == (4 * 27 + 4) + (4 * 3 + 4)

    costs = analyse(network)
    assert costs[merge].field.size == (3, 3)  # the union of its branches' fields
    assert costs[merge].activations == 3 * 4 * 64  # both branches and the maximum
    assert valid_inputs(network).describe() == "valid inputs: H >= 1, W >= 1"
    summary = [(row.name, row.kind) for row in rows(network, costs, 3)]
    assert summary == [("m", "Maximum"), ("", "max"), ("wide", "conv"), ("narrow", "conv"), ("", "relu")]
    assert input_row(network, costs).cost.out_shape == (3, 8, 8)
    dot = draw.to_dot(network, depth=2).source
    assert 'tooltip="element-wise maximum"' in dot and ">max<" not in dot and "label=max" in dot

    source = python_source(network)
    assert "out = torch.maximum(branch1, branch2)" in source and "class Maximum(nn.Module):" in source
    model = build(network)
    x = torch.randn(2, 3, 8, 8)
    expected = torch.relu(torch.maximum(model.m.wide(x), model.m.narrow(x)))
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(script(model)(x), expected)

    mismatch = _write(tmp_path, "  maximum {\n    conv(4, 1)\n    conv(5, 1)\n  }")
    with pytest.raises(netdsl.ShapeError, match=r"maximum: the branches give \[4, 8, 8\], \[5, 8, 8\]"):
        netdsl.check(mismatch)
    shortcut = _write(tmp_path, "  maximum { conv(4, 1) } shortcut conv(4, 1)")
    with pytest.raises(netdsl.NetDSLTypeError, match="'maximum' takes no shortcut"):
        netdsl.check(shortcut)


def test_unregistered_keyword_is_a_name_again(tmp_path):
    assert "maximum" not in COMBINATORS
    path = _write(tmp_path, "  maximum { conv(4, 1) }")
    with pytest.raises(netdsl.NetDSLNameError, match="unknown layer or block 'maximum'"):
        netdsl.check(path)
