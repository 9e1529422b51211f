"""Stages 2 and 3 — resolve and check: .net text → annotated graph, and the errors users see.

Every error test asserts the class, the exact message, the line and column and, where there is
one, the hint. Nothing here needs torch except the comparison with torchvision's
`_make_divisible`; a subprocess checks that the checker itself never imports torch.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl.api import parse_override
from netdsl.check import Limits
from netdsl.errors import (
    ImportError_, NameError_, NetDSLError, ParameterError, ShapeError, SyntaxError_, TypeError_,
)
from netdsl.graph import Layer, Merge, Module

REPO = Path(__file__).resolve().parent.parent
NETWORKS = REPO / "networks"
STD = REPO / "netdsl" / "std"

# Parameter counts of torchvision's models (sum of p.numel() over model.parameters()).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "wide_resnet50_2": 68_883_240, "resnext50_32x4d": 25_028_904,
}


# ---- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def main(tmp_path) -> str:
    """Where the source under test claims to live (imports resolve relative to it)."""
    return str(tmp_path / "main.net")


def check(path, text, **overrides):
    return netdsl.check(path, source=text, **overrides)


def net(path, body: str, *, blocks: str = "", input_shape: str = "[3, 8, 8]", **overrides):
    """Check `blocks` followed by `network n { input <shape> <body> }`: line 3 is the body's first."""
    return check(path, f"{blocks}network n {{\n  input {input_shape}\n{body}\n}}\n", **overrides)


def fails(cls, path, text, message, line, column, hint=None, **overrides) -> NetDSLError:
    """Check `text`, expecting `cls` with exactly `message` at `line`:`column` (and `hint`)."""
    with pytest.raises(cls, match=re.escape(message)) as info:
        check(path, text, **overrides)
    error = info.value
    assert type(error) is cls
    assert error.message == message
    assert (error.span.line, error.span.column) == (line, column)
    assert error.hint == hint
    return error


def body_fails(cls, path, body, message, line, column, hint=None, *, blocks="", **overrides) -> NetDSLError:
    text = f"{blocks}network n {{\n  input [3, 8, 8]\n{body}\n}}\n"
    return fails(cls, path, text, message, line, column, hint, **overrides)


def value(path, expr: str):
    """Evaluate one expression (as a network parameter's default) and return its value."""
    return check(path, f"network n(v={expr}) {{\n  input [1, 1, 1]\n}}\n").arguments["v"]


EXPR_COLUMN = len("network n(v=") + 1  # where `expr` starts in `value`'s source


def expr_fails(cls, path, expr, message, offset=0, hint=None) -> NetDSLError:
    text = f"network n(v={expr}) {{\n  input [1, 1, 1]\n}}\n"
    return fails(cls, path, text, message, 1, EXPR_COLUMN + offset, hint)


def names(network) -> list[str]:
    return [path for path, _ in network.layers()]


def layer(network, path: str) -> Layer:
    return dict(network.layers())[path]


def position_of(path: Path, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """1-based line and column of `needle` in a file, so tests survive edits to the file."""
    found = [(number, line.index(needle) + 1)
             for number, line in enumerate(path.read_text().splitlines(), start=1) if needle in line]
    return found[occurrence]


# ---- expressions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 2 - 3", 5),
    ("7 / 2", 3.5),
    ("6 / 2", 3.0),  # '/' always gives a float
    ("7 // 2", 3),
    ("-7 // 2", -4),  # floor division rounds down, like Python
    ("7.5 // 2", 3.0),
    ("7 % 3", 1),
    ("2 ** 10", 1024),
    ("2 ** 3 ** 2", 512),  # right-associative
    ("-2 ** 2", -4),  # binds tighter than unary minus
    ("2 ** -1", 0.5),
    ("4 ** 0.5", 2.0),
    ("-3 + 1", -2),
    ("1 < 2", True),
    ("2 <= 1", False),
    ("3 >= 3", True),
    ("1 == 1.0", True),
    ("[1, 2] != [1, 2]", False),
    ('"a" < "b"', True),
    ("not 1 < 2", False),
    ("1 < 2 and 3 > 4", False),
    ("false or 2 > 1", True),
    ("false and 1 // 0 == 0", False),  # short-circuit: the right side is never evaluated (names are resolved statically)
    ("true or 1 // 0 == 0", True),
    ("if 1 > 2 then 10 else 20", 20),
    ("if true then 1 else 1 // 0", 1),
    ("[1, 2] + [3]", (1, 2, 3)),
    ("[0] * 3", (0, 0, 0)),
    ('"ab" + "c"', "abc"),
    ('{1: "a", 2: "b"}[2]', "b"),
    ('{"w": [1, 2]}["w"][1]', 2),
    ("[1, 2, 3][-1]", 3),
    ("[[1, 2], [3, 4]][1][0]", 3),
    ('"abc"[1]', "b"),
    ("{}", {}),
    ("[]", ()),
])
def test_arithmetic_comparison_and_containers(main, expr, expected):
    result = value(main, expr)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("expr, expected", [
    ("ceil(7 / 2)", 4),
    ("ceil(-0.5)", 0),
    ("floor(7 / 2)", 3),
    ("floor(-0.5)", -1),
    ("round(2.5)", 2),  # Python's rounding: halves go to the even neighbour
    ("round(3.5)", 4),
    ("round(2.675, 2)", 2.67),
    ("round(7)", 7),
    ("min(3, 1, 2)", 1),
    ("min([4, 9, 2])", 2),
    ("max(3, 1, 2)", 3),
    ("max([4, 9, 2])", 9),
    ("max(1, 2.5)", 2.5),
    ("abs(-3)", 3),
    ("int(-2.7)", -2),
    ("float(3)", 3.0),
    ("len([1, 2, 3])", 3),
    ("sum([1, 2, 3])", 6),
    ("range(3)", (0, 1, 2)),
    ("range(1, 10, 4)", (1, 5, 9)),
    ("zip([1, 2], [3, 4])", ((1, 3), (2, 4))),
    ("enumerate([5, 6])", ((0, 5), (1, 6))),
    ("make_divisible(37)", 40),
    ("make_divisible(37, 16)", 48),  # 32 would lose more than 10%
    ("make_divisible(3, 8, 16)", 16),
    ("make_divisible(32 * 0.75, divisor=8)", 24),
])
def test_builtins(main, expr, expected):
    result = value(main, expr)
    assert result == expected
    assert type(result) is type(expected)


def test_make_divisible_matches_torchvision(main):
    utils = pytest.importorskip("torchvision.models._utils")
    # (netdsl arguments, the same arguments in Python): integers, width-multiplied channels, min_value
    cases = [(f"{v}, {d}", (v, d)) for v in range(1, 200) for d in (1, 3, 4, 8, 16)]
    cases += [(f"{c} * {m}, 8", (c * m, 8)) for c in (16, 24, 32, 40, 80, 96, 112, 192, 320, 1280)
              for m in (0.25, 0.35, 0.5, 0.75, 1.0, 1.1, 1.2, 1.3, 1.4, 1.8, 2.0)]
    cases += [(f"{v}, 8, {m}", (v, 8, m)) for v in (1, 7, 9, 30, 100) for m in (4, 16, 64)]
    got = value(main, "[" + ", ".join(f"make_divisible({args})" for args, _ in cases) + "]")
    expected = [utils._make_divisible(*args) for _, args in cases]
    assert list(got) == expected
    assert all(type(g) is int for g in got)


@pytest.mark.parametrize("expr, cls, message, offset, hint", [
    ("1 + true", TypeError_, "operator '+' cannot combine int 1 and bool true", 0, None),
    ('[1] + "a"', TypeError_, "operator '+' cannot combine list [1] and string \"a\"", 0, None),
    ("1 / 0", TypeError_, "division by zero", 4, None),
    ("5 // (2 - 2)", TypeError_, "division by zero", 6, None),  # the span excludes the parentheses
    ('1 < "a"', TypeError_, "cannot compare int 1 with string \"a\"", 0, None),
    ("not 1", TypeError_, "'not' expects true or false, got 1", 0, None),
    ("1 and true", TypeError_, "'and' expects true or false, got 1", 0, None),
    ("if 1 then 2 else 3", TypeError_, "'if' expects a condition, got int 1", 3, None),
    ("-[1]", TypeError_, "cannot negate list [1]", 0, None),
    ("[1][5]", TypeError_, "index 5 is out of range for a list of 1", 4, None),
    ("[1][true]", TypeError_, "list index must be an integer, got true", 4, None),
    ("3[0]", TypeError_, "cannot index a int", 0, None),
    ("{1: 2}[3]", NameError_, "key 3 is not in {1: 2}", 7, "known keys: 1"),
    ('ceil("a")', TypeError_, "ceil expects a number, got string \"a\"", 0, "ceil(x) -> int"),
    ("min([])", TypeError_, "min of an empty list", 0, "min(a, b, ...) or min(list)"),
    ("len(1, 2)", TypeError_, "wrong arguments for len", 0, "len(list)"),
    ("make_divisible(8, 0)", TypeError_, "make_divisible divisor must be at least 1", 0,
     "make_divisible(v, divisor=8, min_value=divisor)"),
    ("range(200000)", TypeError_, "range of 200000 items exceeds the limit of 100000", 0,
     "range(stop) / range(start, stop, step=1)"),
    ("nope + 1", NameError_, "undefined name 'nope'", 0, None),
    ("celi(1.5)", NameError_, "undefined name 'celi'", 0, "did you mean 'ceil'?"),
    ("relu(1)", TypeError_, "layer relu is not a function", 0,
     "blocks and layers are used as statements, e.g. 'name: block(...)'"),
    ("in.channels", NameError_, "'in' is only defined inside a block or after the network's input", 0, None),
])
def test_expression_errors(main, expr, cls, message, offset, hint):
    expr_fails(cls, main, expr, message, offset, hint)


@pytest.mark.parametrize("expr, cls, message, offset", [
    ("1e400", TypeError_, "number out of range", 0),
    ("ceil(1e400)", TypeError_, "number out of range", 5),
    ("1e300 * 1e300", TypeError_, "number out of range", 0),
    ('[1] < ["a"]', TypeError_, 'cannot compare list [1] with list ["a"]', 0),
    ("{1: 2}[{1: 2}]", TypeError_, "a dict cannot be a dictionary key", 7),
    ("(0 - 8) ** 0.5", TypeError_, "result is not a real number", 0),
    ("2 ** 300", ParameterError, "2 ** 300 is too large", 0),
])
def test_bad_values_are_reported_not_crashed_on(main, expr, cls, message, offset):
    expr_fails(cls, main, expr, message, offset)


def test_let_binds_in_order_and_reads_the_input(main):
    network = net(main, "  let c = in.channels * 2\n  let k = c // 2\n  conv(c, k)")
    conv = layer(network, "0")
    assert (conv.args["out"], conv.args["kernel"]) == (6, 3)
    assert conv.out_shape == (6, 6, 6)


def test_let_is_immutable(main):
    body_fails(NameError_, main, "  let a = 1\n  let a = 2",
               "'a' is already defined in this scope (at line 3)", 4, 7, "names are immutable; choose a new name")


def test_let_cannot_rebind_a_network_parameter(main):
    fails(NameError_, main, "network n(c=1) {\n  input [3, 8, 8]\n  let c = 2\n}\n",
          "'c' is already defined in this scope (at line 1)", 3, 7, "names are immutable; choose a new name")


def test_let_cannot_rebind_a_loop_variable(main):
    body_fails(NameError_, main, "  for i in range(2) {\n    let i = 3\n  }",
               "'i' is already defined in this scope (at line 3)", 4, 9, "names are immutable; choose a new name")


REPETITION = "'x' is reserved for repetition ('layer(...) x 3'); choose another name"


@pytest.mark.parametrize("body, name, column, hint", [
    ("  let x = 2", "x", 7, REPETITION),
    ("  let in = 2", "in", 7, "use 'in_' or another name"),
    ("  for x in range(2) { relu }", "x", 3, REPETITION),
    ("  tap residual", "residual", 3, "use 'residual_' or another name"),
])
def test_reserved_words_cannot_be_bound(main, body, name, column, hint):
    """Every place a name is bound gives the same error and hint for a reserved word."""
    body_fails(NameError_, main, body, f"'{name}' is a reserved word and cannot be used as a name", 3, column, hint)


@pytest.mark.parametrize("text, message, column, hint", [
    ("block conv(c) { relu }\n", "'conv' is a built-in layer; a block or network cannot take its name", 7,
     "rename it, e.g. 'conv_block'"),
    ("block x { relu }\n", "'x' is a reserved word and cannot be used as a name", 7, REPETITION),
    ("block add { relu }\n", "'add' is a reserved word and cannot be used as a name", 7, "use 'add_' or another name"),
])
def test_declarations_cannot_take_layer_names_or_reserved_words(main, text, message, column, hint):
    fails(NameError_, main, text + "network n {\n  input [3, 8, 8]\n}\n", message, 1, column, hint)


def test_a_network_parameter_cannot_be_a_reserved_word(main):
    fails(NameError_, main, "network n(x=1) {\n  input [3, 8, 8]\n}\n",
          "'x' is a reserved word and cannot be used as a name", 1, 11, REPETITION)


def test_undefined_name_suggests_a_close_one(main):
    body_fails(NameError_, main, "  let channels = 4\n  conv(chanels, 3)",
               "undefined name 'chanels'", 4, 8, "did you mean 'channels'?")


def test_input_attribute_typo(main):
    body_fails(NameError_, main, "  conv(in.chanels, 1)",
               "the input [3, 8, 8] has no 'chanels'", 3, 8, "did you mean 'channels'?")


# ---- layers: shapes, parameters, costs ------------------------------------------------------------

def test_layer_shapes_parameters_and_macs(main):
    network = net(main, "  conv(4, 3)\n  bn\n  relu\n  maxpool(2)\n  flatten\n  linear(10)")
    rows = [(path, l.op, l.in_shape, l.out_shape, l.params, l.macs) for path, l in network.layers()]
    assert rows == [
        ("0", "conv", (3, 8, 8), (4, 6, 6), 4 * 3 * 9 + 4, 4 * 3 * 9 * 36),
        ("1", "bn", (4, 6, 6), (4, 6, 6), 8, 0),
        ("2", "relu", (4, 6, 6), (4, 6, 6), 0, 0),
        ("3", "maxpool", (4, 6, 6), (4, 3, 3), 0, 0),
        ("4", "flatten", (4, 3, 3), (36,), 0, 0),
        ("5", "linear", (36,), (10,), 370, 360),
    ]
    assert network.input_shape == (3, 8, 8)
    assert network.output_shape == (10,)
    assert network.params == 112 + 8 + 370
    assert network.macs == 3888 + 360


def test_layer_arguments_are_completed_with_defaults(main):
    network = net(main, "  conv(4, 3, padding=1, cardinality=1, bias=false)\n  maxpool(3, ceil_mode=true)")
    assert layer(network, "0").args == {"out": 4, "kernel": 3, "stride": 1, "pad": 1, "dilation": 1,
                                        "groups": 1, "bias": False}
    assert layer(network, "1").args == {"kernel": 3, "stride": 3, "pad": 0, "ceil": True}
    assert layer(network, "1").out_shape == (4, 3, 3)


def test_pair_arguments(main):
    network = net(main, "  conv(4, [3, 1], pad=[1, 0])", input_shape="[3, 8, 10]")
    conv = layer(network, "0")
    assert conv.args["kernel"] == (3, 1) and conv.out_shape == (4, 8, 10)
    assert conv.params == 4 * 3 * 3 + 4


# ---- blocks ------------------------------------------------------------------------------------------

UNIT = (
    "block unit(out, k=3, pad=(k - 1) // 2, wide=in.channels * 2) {\n"
    "  conv(wide, k, pad=pad)\n"
    "  conv(out, 1)\n"
    "}\n"
)  # lines 1-4; the network's body starts at line 7


def test_block_defaults_keywords_and_input_shape(main):
    network = net(main, "  stem: unit(4)\n  unit(out=6, k=1)", blocks=UNIT)
    assert names(network) == ["stem.0", "stem.1", "1.0", "1.1"]
    first, _, wide, out = (l for _, l in network.layers())
    assert (first.args["out"], first.args["kernel"], first.args["pad"]) == (6, 3, 1)  # wide = 3 * 2
    assert (wide.args["out"], wide.args["kernel"], wide.args["pad"]) == (8, 1, 0)  # wide = 4 * 2
    assert out.out_shape == (6, 8, 8)
    stem = network.root.body[0]
    assert isinstance(stem, Module) and (stem.kind, stem.type_name, stem.name) == ("block", "unit", "stem")
    assert (stem.in_shape, stem.out_shape, stem.params) == ((3, 8, 8), (4, 8, 8), 6 * 3 * 9 + 6 + 4 * 6 + 4)


def test_block_missing_argument(main):
    body_fails(TypeError_, main, "  unit()", "block 'unit' is missing its 'out' argument", 7, 3,
               "unit(out, k, pad, wide)", blocks=UNIT)


def test_block_too_many_arguments(main):
    body_fails(TypeError_, main, "  unit(1, 2, 3, 4, 5)", "block 'unit' takes 4 arguments (out, k, pad, wide), got 5",
               7, 20, blocks=UNIT)


def test_block_argument_given_twice(main):
    body_fails(TypeError_, main, "  unit(4, out=5)", "block 'unit' got 'out' twice", 7, 11, blocks=UNIT)


def test_unknown_block_parameter_suggests_a_close_one(main):
    body_fails(NameError_, main, "  b1: unit(4, wdie=2)", "block 'unit' has no parameter 'wdie'", 7, 15,
               "did you mean 'wide'?", blocks=UNIT)


def test_unknown_block_parameter_lists_the_parameters(main):
    body_fails(NameError_, main, "  b1: unit(4, zzz=2)", "block 'unit' has no parameter 'zzz'", 7, 15,
               "its parameters are: out, k, pad, wide", blocks=UNIT)


def test_blocks_and_layers_are_values(main):
    blocks = ("block mk(c) { conv(c, 1) }\n"
              "block apply(f, c) {\n  if c > 0 { f(c) } else { f }\n}\n")  # lines 1-4
    network = net(main, "  s: apply(mk, 5)\n  apply(relu, 0)\n  let act = relu6\n  act", blocks=blocks)
    assert names(network) == ["s.0.0", "1.0", "2"]
    assert [l.op for _, l in network.layers()] == ["conv", "relu", "relu6"]
    assert layer(network, "s.0.0").out_shape == (5, 8, 8)


def test_calling_a_value_that_is_not_a_layer(main):
    body_fails(TypeError_, main, "  apply(3)", "'f' is an int (3), not a layer or block", 2, 3,
               blocks="block apply(f) {\n  f\n}\n")


def test_calling_a_network_as_a_layer(main):
    text = "network m {\n  input [1, 1, 1]\n}\nnetwork n {\n  input [3, 8, 8]\n  m\n}\n"
    fails(TypeError_, main, text, "'m' is a network and cannot be used as a layer", 6, 3,
          "turn the reusable part into a block", network="n")


def test_input_statement_inside_a_block(main):
    body_fails(ShapeError, main, "  b", "'input' belongs at the start of a network", 1, 11,
               "blocks receive their input from the caller; read its shape with in.channels",
               blocks="block b { input [3, 8, 8] }\n")


def test_assert_in_a_block(main):
    blocks = 'block even(c) {\n  assert c % 2 == 0, "even channels only"\n  conv(c, 1)\n}\n'
    network = net(main, "  even(4)", blocks=blocks)
    assert network.output_shape == (4, 8, 8)
    error = body_fails(ParameterError, main, "  even(5)", "even channels only", 2, 3, blocks=blocks)
    assert [frame.block for frame in error.trace] == ["even"]


def test_assert_without_message_quotes_the_condition(main):
    body_fails(ParameterError, main, "  assert in.channels == 4", "assertion failed: in.channels == 4", 3, 3)


def test_assert_needs_a_condition(main):
    body_fails(TypeError_, main, "  assert 1", "assert expects a condition, got int 1", 3, 10)


def test_block_recursion_hits_the_depth_limit(main):
    blocks = "block rec(c) {\n  rec(c)\n}\n"
    message = "blocks nested more than 5 deep (does 'rec' call itself?)"
    with pytest.raises(ParameterError, match=re.escape(message)) as info:
        net(main, "  b1: rec(2)", blocks=blocks, limits=Limits(block_depth=5))
    error = info.value
    assert error.message == message
    assert (error.span.line, error.span.column) == (2, 3)
    assert [frame.path for frame in error.trace] == ["b1", "b1.0", "b1.0.0", "b1.0.0.0", "b1.0.0.0.0"]


def test_block_recursion_with_default_limit(main):
    with pytest.raises(ParameterError) as info:
        net(main, "  rec(2)", blocks="block rec(c) {\n  rec(c)\n}\n")
    error = info.value
    assert error.message == "blocks nested more than 100 deep (does 'rec' call itself?)"
    assert len(error.trace) == 100
    # the diagnostic keeps the innermost and outermost frames and elides the rest
    lines = error.format().splitlines()
    assert len(lines) == 3 + 8
    assert lines[7] == "  ... 93 more instantiations ..."
    assert lines[-1] == "  in block 'rec' (main.net:1), instantiated at main.net:6, module 0"
    assert lines[-2] == "  in block 'rec' (main.net:1), instantiated at main.net:2, module 0.0"
    assert all(len(line) < 160 for line in lines)


# ---- the instantiation chain in diagnostics -------------------------------------------------------

def test_error_inside_a_block_shows_where_it_was_instantiated(main):
    blocks = "block unit(c) {\n  conv(c, 3, pad=1)\n  conv(c, 3, groups=4)\n}\n"  # lines 1-4
    with pytest.raises(ParameterError) as info:
        net(main, "  b1: unit(4)\n  b2: unit(6)", blocks=blocks)
    assert info.value.format() == (
        f"{main}:3:21: error: conv input channels 6 are not divisible by groups=4\n"
        "    3 |   conv(c, 3, groups=4)\n"
        "      |                     ^\n"
        "  in block 'unit' (main.net:1), instantiated at main.net:8, module b2"
    )


def test_nested_instantiation_chain_lists_the_innermost_block_first(main):
    blocks = ("block inner(c) {\n  conv(c, 1)\n  linear(c)\n}\n"  # lines 1-4
              "block outer(c) {\n  relu\n  core: inner(c)\n}\n")  # lines 5-8
    with pytest.raises(ShapeError) as info:
        net(main, "  conv(4, 1)\n  stage: outer(8)", blocks=blocks)
    error = info.value
    assert error.message == "linear expects a flat [features] input, got [8, 8, 8]"
    assert (error.span.line, error.span.column) == (3, 3)
    lines = error.format().splitlines()
    assert lines[0] == f"{main}:3:3: error: linear expects a flat [features] input, got [8, 8, 8]"
    assert lines[3:] == [
        "  in block 'inner' (main.net:1), instantiated at main.net:7, module stage.core",
        "  in block 'outer' (main.net:5), instantiated at main.net:12, module stage",
        "  hint: insert 'flatten' (or a global pool, then 'flatten') before it; for a linear at every position, "
        "'permute([1, 2, 0])' to [height, width, channels] first",
    ]


def test_instantiation_chain_across_files(tmp_path):
    # resnet18 uses 'basic' units, which accept only groups=1: the assert fires inside std/resnet.net.
    with pytest.raises(ParameterError) as info:
        netdsl.check(NETWORKS / "resnet18.net", groups=2)
    error = info.value
    assert error.message == "basic blocks support only groups=1 and base_width=64"
    assert Path(error.span.file).resolve() == (STD / "resnet.net").resolve()
    assert (error.span.line, error.span.column) == position_of(STD / "resnet.net", "assert groups == 1")
    assert [(frame.block, frame.path) for frame in error.trace] == [("stage", "layer1"), ("basic", "layer1.0")]
    stage_call = position_of(NETWORKS / "resnet.net", "stage(unit, 64")
    assert (error.trace[0].call.line, error.trace[0].call.column) == stage_call
    stage_line = position_of(STD / "resnet.net", "block stage(")[0]
    first_unit_line = stage_line + 1
    lines = error.format().splitlines()
    assert lines[3:5] == [
        f"  in block 'basic' (resnet.net:{position_of(STD / 'resnet.net', 'block basic(')[0]}), "
        f"instantiated at resnet.net:{first_unit_line}, module layer1.0",
        f"  in block 'stage' (resnet.net:{stage_line}), instantiated at resnet.net:{stage_call[0]}, module layer1",
    ]


# ---- loops and conditionals ------------------------------------------------------------------------

def test_loop_over_a_table_with_template_labels(main):
    network = net(main, "  for c, n, s in [[4, 1, 1], [8, 2, 2]] {\n"
                        '    "stage{c}": { conv(c, 3, stride=s, pad=1) relu } x n\n'
                        "  }")
    assert names(network) == ["stage4.0.0", "stage4.0.1", "stage8.0.0", "stage8.0.1", "stage8.1.0", "stage8.1.1"]
    assert layer(network, "stage4.0.0").out_shape == (4, 8, 8)
    assert layer(network, "stage8.0.0").out_shape == (8, 4, 4)
    assert layer(network, "stage8.1.0").out_shape == (8, 2, 2)
    assert network.output_shape == (8, 2, 2)


def test_loop_over_a_dict_yields_key_value_pairs(main):
    network = net(main, "  for c, k in {4: 3, 6: 1} {\n    conv(c, k)\n  }")
    assert [(l.args["out"], l.args["kernel"]) for _, l in network.layers()] == [(4, 3), (6, 1)]


def test_template_label_with_arithmetic(main):
    network = net(main, '  for i in range(3) {\n    "layer{i + 1}": conv(4, 1)\n  }\n'
                        '  let h = "head"\n  "{h}_fc": flatten')
    assert names(network) == ["layer1", "layer2", "layer3", "head_fc"]


def test_template_labels_that_collide(main):
    body_fails(NameError_, main, '  for i in [1, 1] {\n    "l{i}": conv(4, 1)\n  }',
               "duplicate name 'l1' in module '<root>' (first used at line 4)", 4, 5,
               "only a parameter-free layer with the same arguments may be reused by name")


def test_template_label_value_type(main):
    body_fails(TypeError_, main, '  "l{1.5}": relu', "label templates take integers or strings, got 1.5", 3, 3)


@pytest.mark.parametrize("label, message, hint", [
    ('"a{1}.b"', "invalid layer name 'a1.b': a name cannot contain '.'",
     "PyTorch separates the names in a module path with '.'"),
    ('"{1}2"', "'12' cannot name a layer: digits alone name the unlabelled layers", "use 'layer12' or another name"),
    ('""', "a layer name cannot be empty", None),
    ('"a b"', "invalid layer name 'a b'", "names are up to 200 printable characters without spaces"),
    ("forward", "'forward' cannot name a layer: it is reserved by torch.nn.Module", "use 'forward_' or another name"),
    ('"__dict__"', "'__dict__' cannot name a layer: it is reserved by torch.nn.Module",
     "use '__dict___' or another name"),
])
def test_labels_must_be_safe_attribute_names(main, label, message, hint):
    body_fails(NameError_, main, f"  {label}: relu", message, 3, 3, hint)


def test_for_errors(main):
    body_fails(TypeError_, main, "  for i in 3 { relu }", "for expects a list, got int 3", 3, 12,
               "use range(n) to count")
    body_fails(TypeError_, main, "  for a, b in [1, 2] { relu }", "cannot unpack 1 into 2 names (a, b)", 3, 3)


def test_if_elif_else_picks_one_branch(main):
    text = "  if c > 6 {\n    a: conv(1, 1)\n  } elif c > 3 {\n    b: conv(2, 1)\n  } else {\n    c: conv(3, 1)\n  }"
    for c, expected in ((7, ["a"]), (4, ["b"]), (1, ["c"])):
        network = check(main, f"network n(c=1) {{\n  input [3, 8, 8]\n{text}\n}}\n", c=c)
        assert names(network) == expected


def test_if_needs_a_condition(main):
    body_fails(TypeError_, main, "  if 1 { relu }", "if expects a condition, got int 1", 3, 6)


# ---- repetition naming and label reuse -----------------------------------------------------------

def test_labelled_repetition_is_a_sequential_numbered_from_zero(main):
    network = net(main, "  b: { conv(4, 1) relu } x 3")
    assert names(network) == ["b.0.0", "b.0.1", "b.1.0", "b.1.1", "b.2.0", "b.2.1"]
    (b,) = network.root.body
    assert isinstance(b, Module) and (b.kind, b.type_name) == ("sequential", "repeat")
    assert [child.name for child in b.children()] == ["0", "1", "2"]
    assert b.params == 16 + 20 + 20


def test_labelled_repetition_of_a_layer(main):
    network = net(main, "  convs: conv(4, 3, pad=1) x 2")
    assert names(network) == ["convs.0", "convs.1"]
    assert layer(network, "convs.1").in_shape == (4, 8, 8)


def test_unlabelled_repetition_flattens_into_the_parent_numbering(main):
    network = net(main, "  conv(4, 1)\n  relu x 2\n  conv(2, 1)\n  { relu bn } x 2")
    assert names(network) == ["0", "1", "2", "3", "4.0", "4.1", "5.0", "5.1"]


def test_repeat_count_from_an_expression_and_zero(main):
    network = check(main, "network n(n=3) {\n  input [3, 8, 8]\n  c: conv(3, 1) x (n - 1)\n  relu x 0\n}\n")
    assert names(network) == ["c.0", "c.1"]


@pytest.mark.parametrize("count, cls, message, column", [
    ("(0 - 1)", TypeError_, "repeat count must be a non-negative integer, got -1", 11),
    ("(4 / 2)", TypeError_, "repeat count must be a non-negative integer, got 2.0", 11),
    ("true", TypeError_, "repeat count must be a non-negative integer, got true", 10),
    ("10001", ParameterError, "repeat count 10001 exceeds the limit of 10000", 10),
])
def test_repeat_count_errors(main, count, cls, message, column):
    body_fails(cls, main, f"  relu x {count}", message, 3, column)


def test_parameter_free_layer_reuses_its_label(main):
    network = net(main, "  relu: relu\n  conv(4, 1)\n  relu: relu")
    assert names(network) == ["relu", "1"]  # the second use is the same module
    first, conv, second = network.root.body
    assert (first.name, first.shared) == ("relu", False)
    assert (second.name, second.shared, second.op) == ("relu", True, "relu")
    assert second.in_shape == (4, 8, 8)


def test_pool_with_the_same_arguments_reuses_its_label(main):
    network = net(main, "  mp: maxpool(2)\n  conv(4, 1)\n  mp: maxpool(2)", input_shape="[3, 16, 16]")
    assert names(network) == ["mp", "1"]
    assert network.output_shape == (4, 4, 4)


@pytest.mark.parametrize("body, message, line, column", [
    ("  c1: conv(4, 1)\n  c1: conv(4, 1)", "duplicate name 'c1' in module '<root>' (first used at line 3)", 4, 3),
    ("  act: relu\n  conv(4, 1)\n  act: relu6", "duplicate name 'act' in module '<root>' (first used at line 3)", 5, 3),
    ("  mp: maxpool(2)\n  mp: maxpool(3)", "duplicate name 'mp' in module '<root>' (first used at line 3)", 4, 3),
    ("  b: conv(4, 1)\n  b: { relu }", "duplicate name 'b' in module '<root>' (first used at line 3)", 4, 3),
    ("  b: conv(4, 1)\n  b: relu x 2", "duplicate name 'b' in module '<root>' (first used at line 3)", 4, 3),
    ("  b: conv(4, 1)\n  b: residual { relu }", "duplicate name 'b' in module '<root>' (first used at line 3)", 4, 3),
])
def test_label_reuse_needs_a_parameter_free_layer_with_the_same_arguments(main, body, message, line, column):
    fails(NameError_, main, f"network n {{\n  input [3, 16, 16]\n{body}\n}}\n", message, line, column,
          "only a parameter-free layer with the same arguments may be reused by name")


# ---- residual --------------------------------------------------------------------------------------

def test_identity_residual(main):
    network = net(main, "  residual {\n    conv(3, 3, pad=1)\n    bn\n  }\n  relu")
    residual = network.root.body[0]
    assert isinstance(residual, Merge) and residual.kind == "residual" and residual.arms[1] == []  # identity shortcut
    assert residual.in_shape == residual.out_shape == (3, 8, 8)
    assert names(network) == ["0", "1", "2"]


def test_residual_projects_automatically_when_the_shape_changes(main):
    network = net(main, "  unit: residual {\n    conv(8, 3, stride=2, pad=1)\n  }")
    assert names(network) == ["unit.0", "unit.downsample.0", "unit.downsample.1"]
    projection = layer(network, "unit.downsample.0")
    assert projection.args == {"out": 8, "kernel": 1, "stride": 2, "pad": 0, "dilation": 1, "groups": 1,
                               "bias": False}
    assert (projection.in_shape, projection.out_shape) == ((3, 8, 8), (8, 4, 4))
    assert layer(network, "unit.downsample.1").op == "bn"
    assert network.params == (8 * 3 * 9 + 8) + 8 * 3 + 2 * 8
    (unit,) = network.root.body
    (residual,) = unit.body
    (shortcut,) = residual.arms[1]
    assert isinstance(shortcut, Module) and shortcut.name == "downsample"


def test_residual_projection_for_channels_only(main):
    network = net(main, "  residual { conv(8, 1) }")
    assert layer(network, "downsample.0").args["stride"] == 1


def test_residual_with_explicit_shortcut(main):
    network = net(main, "  r: residual {\n    conv(8, 3, stride=2, pad=1)\n  } shortcut { conv(8, 1, stride=2) bn }")
    assert names(network) == ["r.0", "r.downsample.0", "r.downsample.1"]
    network = net(main, "  r: residual {\n    conv(3, 3, pad=1)\n  } shortcut proj: conv(3, 1)")
    assert names(network) == ["r.0", "r.proj"]


def test_residual_shape_mismatch(main):
    body_fails(ShapeError, main, "  residual {\n    conv(8, 3, pad=1)\n  } shortcut conv(4, 1)",
               "residual add: the body gives [8, 8, 8] but the shortcut gives [4, 8, 8]", 3, 3,
               "a projection from [3, 8, 8]: 'shortcut { conv(8, 1, bias=false)  bn }'")
    body_fails(ShapeError, main, "  residual {\n    conv(8, 3, stride=2, pad=1)\n  } shortcut conv(4, 1)",
               "residual add: the body gives [8, 4, 4] but the shortcut gives [4, 8, 8]", 3, 3,
               "a projection from [3, 8, 8]: 'shortcut { conv(8, 1, stride=2, bias=false)  bn }'")


def test_residual_that_shrinks_gets_the_padding_that_fixes_it(main):
    body_fails(ShapeError, main, "  residual {\n    conv(3, 3, pad=1)\n    { relu  conv(3, [3, 1]) }\n  }",
               "residual add: the body changes the shape from [3, 8, 8] to [3, 6, 8] and no projection can match it",
               3, 3, "its conv at main.net:5 turns [3, 8, 8] into [3, 6, 8]: give it pad=[1, 0] to keep the size")


def test_residual_that_grows_cannot_be_projected(main):
    body_fails(ShapeError, main, "  residual { conv(3, 1, pad=1) }",
               "residual add: the body changes the shape from [3, 8, 8] to [3, 10, 10] and no projection can match it",
               3, 3, "its conv at main.net:3 turns [3, 8, 8] into [3, 10, 10]: give it pad=0 to keep the size")
    body_fails(ShapeError, main, "  residual { conv(3, 2) }",  # an even kernel: no padding keeps the size
               "residual add: the body changes the shape from [3, 8, 8] to [3, 7, 7] and no projection can match it",
               3, 3, "the spatial size may only shrink by striding; give the shortcut explicitly")


def test_residual_that_flattens_cannot_be_projected(main):
    body_fails(ShapeError, main, "  residual { flatten }",
               "residual add: the body changes the shape from [3, 8, 8] to [192] and no projection can match it",
               3, 3, "a residual body must keep [channels, height, width] form")


def test_two_generated_projections_in_one_module_collide(main):
    body_fails(NameError_, main, "  residual { conv(8, 1) }\n  residual { conv(16, 1) }",
               "module '<root>' already has a 'downsample'; this residual needs a generated projection of the "
               "same name", 4, 3,
               "label the residual ('name: residual { ... }') so its projection gets its own module, "
               "or give it an explicit 'shortcut name: { ... }'")
    network = net(main, "  first: residual { conv(8, 1) }\n  residual { conv(16, 1) }")
    assert names(network) == ["first.0", "first.downsample.0", "first.downsample.1",
                              "1", "downsample.0", "downsample.1"]


# ---- inception ----------------------------------------------------------------------------------------

def test_inception_concatenates_channels(main):
    network = net(main, "  inc: inception {\n    a: conv(4, 1)\n    b: { conv(2, 1) conv(5, 3, pad=1) }\n"
                        "    maxpool(3, stride=1, pad=1)\n  }")
    assert network.output_shape == (4 + 5 + 3, 8, 8)
    assert names(network) == ["inc.a", "inc.b.0", "inc.b.1", "inc.2"]
    (inc,) = network.root.body
    assert inc.type_name == "Inception"
    (concat,) = inc.body
    assert isinstance(concat, Merge) and concat.kind == "inception" and len(concat.arms) == 3
    assert [branch[-1].out_shape for branch in concat.arms] == [(4, 8, 8), (5, 8, 8), (3, 8, 8)]
    assert all(branch[0].in_shape == (3, 8, 8) for branch in concat.arms)


def test_inception_spatial_mismatch(main):
    body_fails(ShapeError, main, "  inception {\n    conv(4, 1)\n    conv(5, 3)\n  }",
               "inception branches disagree on spatial size: branch 1 gives [4, 8, 8], branch 2 gives [5, 6, 6]",
               3, 3, "concatenation needs equal height and width; adjust stride or padding")


def test_inception_needs_a_branch(main):
    body_fails(ShapeError, main, "  inception { let a = 1 }", "inception needs at least one branch", 3, 3)


# ---- layer errors --------------------------------------------------------------------------------------

def test_linear_on_a_spatial_input(main):
    body_fails(ShapeError, main, "  linear(10)", "linear expects a flat [features] input, got [3, 8, 8]", 3, 3,
               "insert 'flatten' (or a global pool, then 'flatten') before it; for a linear at every position, "
               "'permute([1, 2, 0])' to [height, width, channels] first")


def test_linear_at_every_position_of_a_channels_last_tensor(main):
    graph = net(main, "  permute([1, 2, 0])\n  linear(10)\n  permute([2, 0, 1])")
    linear = dict(graph.layers())["1"]
    assert (linear.in_shape, linear.out_shape, linear.params, linear.macs) == ((8, 8, 3), (8, 8, 10), 40, 8 * 8 * 30)


def test_linear_in_features_mismatch(main):
    body_fails(ShapeError, main, "  flatten\n  linear(10, in_features=99)",
               "linear expects 99 input features, got 192 (input shape [192])", 4, 3,
               "the preceding layers produce 192 features; fix in_features or the layers before")


def test_linear_in_features_that_match(main):
    assert net(main, "  flatten\n  linear(10, in_features=192)").output_shape == (10,)


def test_spatial_layer_after_flatten(main):
    body_fails(ShapeError, main, "  flatten\n  conv(4, 3)", "conv expects a [channels, height, width] input, got [192]",
               4, 3, "spatial layers must come before 'flatten'")


@pytest.mark.parametrize("body, message, line, column", [
    ("  conv(8, 3, groups=2)", "conv input channels 3 are not divisible by groups=2", 3, 21),
    ("  conv(6, 3, groups=3, pad=1)\n  conv(8, 3, groups=3)",
     "conv output channels 8 are not divisible by groups=3", 4, 21),
    ("  conv(6, 1, cardinality=4)", "conv input channels 3 are not divisible by groups=4", 3, 26),
])
def test_channels_not_divisible_by_groups(main, body, message, line, column):
    body_fails(ParameterError, main, body, message, line, column)  # the caret is on the groups value


@pytest.mark.parametrize("body, message, line, column", [
    ("  conv(8, 9)",
     "conv output would be empty: input [3, 8, 8], kernel 9, stride 1, pad 0 leave 0 along height", 3, 3),
    ("  maxpool(2) x 4",
     "maxpool output would be empty: input [3, 1, 1], kernel 2, stride 2, pad 0 leave 0 along height", 3, 3),
    ("  conv(4, [1, 9])", "conv output would be empty: input [3, 8, 8], kernel 9, stride 1, pad 0 leave 0 along width",
     3, 3),
])
def test_spatial_size_falling_to_zero(main, body, message, line, column):
    body_fails(ShapeError, main, body, message, line, column, "use a larger input, a smaller kernel or more padding")


def test_unknown_layer_suggests_a_close_one(main):
    error = body_fails(NameError_, main, "  maxpol(2)", "unknown layer or block 'maxpol'", 3, 3,
                       "did you mean 'maxpool' or 'avgpool'?")
    assert error.format() == (
        f"{main}:3:3: error: unknown layer or block 'maxpol'\n"
        "    3 |   maxpol(2)\n"
        "      |   ^~~~~~\n"
        "  hint: did you mean 'maxpool' or 'avgpool'?"
    )


def test_unknown_layer_suggests_a_block(main):
    body_fails(NameError_, main, "  botleneck(4)", "unknown layer or block 'botleneck'", 4, 3,
               "did you mean 'bottleneck'?", blocks="block bottleneck(c) { conv(c, 1) }\n")


def test_unknown_layer_without_a_close_name(main):
    body_fails(NameError_, main, "  zzzz", "unknown layer or block 'zzzz'", 3, 3,
               "define it with 'block', import it, or see 'netdsl layers'")


def test_unknown_layer_parameter_suggests_a_close_one(main):
    body_fails(NameError_, main, "  conv(64, 3, strid=2)", "conv has no parameter 'strid'", 3, 15,
               "did you mean 'stride'?")


def test_unknown_layer_parameter_lists_the_parameters(main):
    body_fails(NameError_, main, "  relu(inplace=true)", "relu has no parameter 'inplace'", 3, 8,
               "relu takes no arguments")
    body_fails(NameError_, main, "  dropout(q=0.1)", "dropout has no parameter 'q'", 3, 11, "dropout takes: p")


@pytest.mark.parametrize("body, message, column, hint", [
    ("  conv(64 / 2, 3)", "conv: 'out' expects an integer, got float 32.0", 8,
     "use // for integer division, or floor()/round()"),
    ("  conv(4, 3, stride=2.0)", "conv: 'stride' expects an integer or a list of two integers, got float 2.0", 21,
     "use // for integer division, or floor()/round()"),
    ("  conv(4, [3, 3, 3])", "conv: 'kernel' expects an integer or a list of two integers, got list [3, 3, 3]", 11,
     None),
    ("  conv(4, 3, bias=1)", "conv: 'bias' expects true or false, got int 1", 19, None),
    ('  dropout("half")', "dropout: 'p' expects a number, got string \"half\"", 11, None),
    ("  conv(true, 3)", "conv: 'out' expects an integer, got bool true", 8, None),
])
def test_wrong_argument_types(main, body, message, column, hint):
    body_fails(TypeError_, main, body, message, 3, column, hint)


@pytest.mark.parametrize("body, cls, message, column, hint", [
    ("  conv(4)", TypeError_, "conv is missing its 'kernel' argument (kernel size)", 3, "conv(out, kernel, ...)"),
    ("  conv(4, 3, 1, 0, 1, 1, true, 5)", TypeError_,
     "conv takes at most 7 positional arguments (out, kernel, stride, pad, dilation, groups, bias), got 8", 32, None),
    ("  conv(4, 3, stride=1, 2)", TypeError_, "positional argument after a keyword argument", 24, None),
    ("  conv(4, 3, pad=1, padding=1)", TypeError_, "conv got 'pad' twice", 21, None),
    ("  conv(0, 3)", ParameterError, "conv: 'out' must be at least 1, got 0", 8, None),
    ("  dropout(p=2)", ParameterError, "dropout probability must be in [0, 1], got 2.0", 13, None),
    ("  maxpool(2, pad=2)", ParameterError, "maxpool pad 2 is more than half the kernel 2", 18, None),
])
def test_argument_binding_errors(main, body, cls, message, column, hint):
    body_fails(cls, main, body, message, 3, column, hint)


def test_layer_or_block_name_that_is_a_number(main):
    body_fails(TypeError_, main, "  let k = 3\n  k", "'k' is an int (3), not a layer or block", 4, 3)


# ---- network input ------------------------------------------------------------------------------------

def test_network_without_input(main):
    fails(ShapeError, main, "network n {\n  let a = 1\n}\n", "network 'n' declares no input shape", 1, 9,
          "add 'input [3, 224, 224]' (channels, height, width) as its first statement")


def test_layer_before_input(main):
    fails(ShapeError, main, "network n {\n  relu\n  input [3, 8, 8]\n}\n", "layers before the input shape is declared",
          2, 3, "start the network with 'input [channels, height, width]'")


def test_let_and_assert_may_precede_input(main):
    network = check(main, "network n(s=8) {\n  let c = 3\n  assert s > 1\n  input [c, s, s]\n  conv(c, 1)\n}\n")
    assert network.input_shape == (3, 8, 8)


@pytest.mark.parametrize("dims, shown", [("[3, 0, 8]", "[3, 0, 8]"), ("[3, 8.0, 8]", "[3, 8.0, 8]"), ("[]", "[]")])
def test_input_shape_must_be_positive_integers(main, dims, shown):
    fails(TypeError_, main, f"network n {{\n  input {dims}\n}}\n",
          f"input shape must be a list of positive integers, got {shown}", 2, 3,
          "e.g. input [3, 224, 224] (channels, height, width; batch is implicit)")


def test_file_without_network(main):
    fails(NameError_, main, "block b { relu }\n", "this file declares no network", 1, 1,
          "add 'network NAME { input [3, 224, 224] ... }', or a variant 'network NAME = base(...)'")


def test_duplicate_definition(main):
    fails(NameError_, main, "block b { relu }\nblock b { relu6 }\nnetwork n {\n  input [1, 2, 2]\n}\n",
          f"'b' is already defined at {main}:1:7", 2, 7, "rename one of them")


# ---- network parameters and overrides -----------------------------------------------------------------

def test_resnet_parameter_counts_match_torchvision():
    assert netdsl.check(NETWORKS / "resnet.net").params == TORCHVISION_PARAMS["resnet50"]
    assert netdsl.check(NETWORKS / "resnet.net", depth=18).params == TORCHVISION_PARAMS["resnet18"]
    assert netdsl.check(NETWORKS / "resnet.net", depth=34).params == TORCHVISION_PARAMS["resnet34"]
    wide = netdsl.check(NETWORKS / "resnet.net", width=128)
    assert wide.params == TORCHVISION_PARAMS["wide_resnet50_2"]
    resnext = netdsl.check(NETWORKS / "resnet.net", groups=32, width=4)
    assert resnext.params == TORCHVISION_PARAMS["resnext50_32x4d"]
    assert resnext.arguments == {"depth": 50, "width": 4, "groups": 32, "classes": 1000}


def test_resnet_module_paths_match_torchvision():
    paths = names(netdsl.check(NETWORKS / "resnet.net", depth=18))
    assert paths[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert paths[-1] == "fc"
    for expected in ("layer1.0.conv1", "layer1.0.bn2", "layer2.0.downsample.0", "layer2.0.downsample.1",
                     "layer4.1.conv2"):
        assert expected in paths
    assert not any(path.startswith("layer1.0.downsample") for path in paths)


def test_command_line_override_is_an_expression():
    name, expr = parse_override("depth=101")
    assert name == "depth"
    network = netdsl.check(NETWORKS / "resnet.net", **{name: expr})
    assert network.arguments["depth"] == 101
    assert network.params == TORCHVISION_PARAMS["resnet101"]
    name, expr = parse_override("width = 64 * 2")
    network = netdsl.check(NETWORKS / "resnet.net", **{name: expr})
    assert network.arguments["width"] == 128
    assert network.params == TORCHVISION_PARAMS["wide_resnet50_2"]


def test_override_can_name_a_block_or_a_layer(main):
    text = ("block mk(c) { conv(c, 1) }\nblock mk3(c) { conv(c, 3) }\n"
            "network n(unit=mk, act=relu) {\n  input [3, 8, 8]\n  unit(4)\n  act\n}\n")
    network = check(main, text)
    assert [(l.op, l.out_shape) for _, l in network.layers()] == [("conv", (4, 8, 8)), ("relu", (4, 8, 8))]
    overrides = dict(parse_override(item) for item in ("unit=mk3", "act=relu6"))
    network = check(main, text, **overrides)
    assert [(l.op, l.out_shape) for _, l in network.layers()] == [("conv", (4, 6, 6)), ("relu6", (4, 6, 6))]


def test_override_with_python_values(main):
    text = "network n(k=[1, 1], c=4) {\n  input [3, 8, 8]\n  conv(c, k)\n}\n"
    network = check(main, text, k=[3, 1], c=5)
    assert network.arguments == {"k": (3, 1), "c": 5}
    assert layer(network, "0").out_shape == (5, 6, 8)
    with pytest.raises(TypeError_, match="override 'c': cannot use a Python object as a netdsl value"):
        check(main, text, c=object())


def test_override_expression_error_points_at_the_override():
    name, expr = parse_override("depth=nope")
    with pytest.raises(NameError_) as info:
        netdsl.check(NETWORKS / "resnet.net", **{name: expr})
    error = info.value
    assert error.message == "undefined name 'nope'"
    assert (error.span.file, error.span.line, error.span.column) == ("<-D depth>", 1, 1)
    assert error.format().splitlines()[:3] == [
        "<-D depth>:1:1: error: undefined name 'nope'",
        "    1 | nope",
        "      | ^~~~",
    ]


@pytest.mark.parametrize("text", ["depth", "=3", "depth=", "2x=3"])
def test_malformed_override(text):
    with pytest.raises(ValueError, match=re.escape(f"expected NAME=VALUE, got {text!r}")):
        parse_override(text)


def test_override_with_a_syntax_error():
    with pytest.raises(SyntaxError_, match=re.escape("invalid expression '1 +' in -D value")):
        parse_override("depth=1 +")


def test_unknown_override_suggests_a_close_one():
    with pytest.raises(NameError_) as info:
        netdsl.check(NETWORKS / "resnet.net", dept=18)
    error = info.value
    assert error.message == "network 'resnet' has no parameter 'dept'"
    assert error.hint == "did you mean 'depth'?"
    assert (error.span.line, error.span.column) == position_of(NETWORKS / "resnet.net", "resnet(depth=")


def test_unknown_override_lists_the_parameters(main):
    fails(NameError_, main, "network n(depth=1, classes=10) {\n  input [3, 8, 8]\n}\n",
          "network 'n' has no parameter 'zzz'", 1, 9, "its parameters are: depth, classes", zzz=1)


def test_missing_dict_key_names_the_key():
    with pytest.raises(NameError_) as info:
        netdsl.check(NETWORKS / "resnet.net", depth=42)
    error = info.value
    assert error.message == ("key 42 is not in {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], "
                             "101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}")
    assert error.hint == "known keys: 18, 34, 50, 101, 152"
    assert (error.span.line, error.span.column) == position_of(NETWORKS / "resnet.net", "depth]")  # the index


def test_required_network_parameter(main):
    text = "network n(c) {\n  input [3, 8, 8]\n  conv(c, 3)\n}\n"
    fails(NameError_, main, text, "network parameter 'c' has no default", 1, 11, "give it one, or pass -D c=VALUE")
    assert check(main, text, c=5).output_shape == (5, 6, 6)


def test_parameter_defaults_see_earlier_parameters(main):
    network = check(main, "network n(c=4, d=c * 2) {\n  input [3, 8, 8]\n}\n", c=10)
    assert network.arguments == {"c": 10, "d": 20}


# ---- variants -------------------------------------------------------------------------------------------

BASE = "network base(c=4, k=3) {\n  input [3, 8, 8]\n  conv(c, k)\n}\n"  # lines 1-4


def test_variant_changes_defaults(main):
    network = check(main, BASE + "network v = base(c=6)\n", network="v")
    assert (network.name, network.arguments, network.output_shape) == ("v", {"c": 6, "k": 3}, (6, 6, 6))
    assert check(main, BASE + "network v = base(c=6)\n", network="base").output_shape == (4, 6, 6)


def test_variant_of_a_variant(main):
    network = check(main, BASE + "network v = base(c=6)\nnetwork w = v(k=1)\n", network="w")
    assert network.arguments == {"c": 6, "k": 1}
    assert network.output_shape == (6, 8, 8)


def test_override_beats_variant_default(main):
    network = check(main, BASE + "network v = base(c=6)\n", network="v", c=9)
    assert network.arguments == {"c": 9, "k": 3}


def test_variant_file_resnet152():
    network = netdsl.check(NETWORKS / "resnet152.net")
    assert network.name == "resnet152"
    assert network.arguments == {"depth": 152, "width": 64, "groups": 1, "classes": 1000}
    assert network.params == TORCHVISION_PARAMS["resnet152"]
    assert network.output_shape == (1000,)
    assert netdsl.check(NETWORKS / "resnet152.net", depth=18).params == TORCHVISION_PARAMS["resnet18"]


def test_variant_errors(main):
    fails(NameError_, main, BASE + "network v = base(cc=6)\n", "network 'base' has no parameter 'cc'", 5, 18,
          "did you mean 'c'?", network="v")
    fails(NameError_, main, BASE + "network v = bse(c=6)\n", "unknown network 'bse'", 5, 13,
          "did you mean 'base'?", network="v")
    fails(TypeError_, main, BASE + "network v = base(6)\n", "variant arguments must be named, e.g. depth=152",
          5, 18, network="v")


def test_several_networks_need_a_choice(main):
    fails(NameError_, main, BASE + "network v = base(c=6)\n", "this file declares 2 networks (base, v)", 5, 9,
          "choose one with --network NAME")
    with pytest.raises(NameError_) as info:
        check(main, BASE, network="bsae")
    assert info.value.message == f"no network named 'bsae' in {main}"
    assert info.value.hint == "did you mean 'base'?"


# ---- imports ---------------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_relative_imports_resolve_from_the_importing_file(tmp_path):
    write(tmp_path / "lib" / "blocks.net", 'import "more.net"\nblock pair(c) {\n  single(c)\n  single(c)\n}\n')
    write(tmp_path / "lib" / "more.net", "block single(c) { conv(c, 3, pad=1) }\n")
    main = write(tmp_path / "models" / "main.net",
                 'import "../lib/blocks.net"\nnetwork n {\n  input [3, 8, 8]\n  p: pair(4)\n}\n')
    network = netdsl.check(main)
    assert names(network) == ["p.0.0", "p.1.0"]
    assert network.output_shape == (4, 8, 8)


def test_diamond_imports_load_once(tmp_path):
    write(tmp_path / "base.net", "block b { relu }\n")
    write(tmp_path / "left.net", 'import "base.net"\nblock l { b }\n')
    write(tmp_path / "right.net", 'import "base.net"\nblock r { b }\n')
    main = write(tmp_path / "main.net",
                 'import "left.net"\nimport "right.net"\nnetwork n {\n  input [3, 8, 8]\n  l\n  r\n}\n')
    assert names(netdsl.check(main)) == ["0.0.0", "1.0.0"]


def test_std_import(main):
    text = 'import "std/blocks.net"\nnetwork n {\n  input [3, 8, 8]\n  stem: conv_bn_relu(16, 3, stride=2)\n}\n'
    network = check(main, text)
    assert names(network) == ["stem.conv", "stem.bn", "stem.2"]  # the ReLU unlabelled: F.relu, as BasicConv2d
    conv = layer(network, "stem.conv")
    assert (conv.args["pad"], conv.args["bias"], conv.out_shape) == (1, False, (16, 4, 4))


def test_netdsl_path(tmp_path, monkeypatch):
    empty, library = tmp_path / "empty", tmp_path / "library"
    empty.mkdir()
    write(library / "extra.net", "block widen(c) { conv(c, 1) }\n")
    main = write(tmp_path / "project" / "main.net",
                 'import "extra.net"\nnetwork n {\n  input [3, 8, 8]\n  widen(12)\n}\n')
    monkeypatch.delenv("NETDSL_PATH", raising=False)
    with pytest.raises(ImportError_, match=re.escape("cannot find 'extra.net'")):
        netdsl.check(main)
    monkeypatch.setenv("NETDSL_PATH", os.pathsep.join([str(empty), str(library)]))
    assert netdsl.check(main).output_shape == (12, 8, 8)


def test_missing_import(tmp_path, monkeypatch):
    monkeypatch.delenv("NETDSL_PATH", raising=False)
    main = write(tmp_path / "main.net", '# a model\nimport "missing.net"\nnetwork n {\n  input [3, 8, 8]\n}\n')
    with pytest.raises(ImportError_) as info:
        netdsl.check(main)
    error = info.value
    assert error.message == f"cannot find 'missing.net' (searched {tmp_path.resolve()})"
    assert (error.span.file, error.span.line, error.span.column) == (str(main), 2, 1)
    assert error.hint == ("paths are relative to the importing file; 'std/...' is the standard library; "
                          "add directories to NETDSL_PATH")
    assert error.format().splitlines()[1:3] == ['    2 | import "missing.net"', "      | ^~~~~~~~~~~~~~~~~~~~"]


def test_missing_import_inside_an_imported_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NETDSL_PATH", raising=False)
    lib = write(tmp_path / "lib.net", 'block b { relu }\n\nimport "gone.net"\n')
    main = write(tmp_path / "main.net", 'import "lib.net"\nnetwork n {\n  input [3, 8, 8]\n}\n')
    with pytest.raises(ImportError_, match=re.escape("cannot find 'gone.net'")) as info:
        netdsl.check(main)
    assert (info.value.span.file, info.value.span.line, info.value.span.column) == (str(lib), 3, 1)


def test_import_cycle(tmp_path):
    write(tmp_path / "a.net", 'import "b.net"\nnetwork n {\n  input [3, 8, 8]\n}\n')
    b = write(tmp_path / "b.net", '# helper\nimport "a.net"\nblock q { relu }\n')
    with pytest.raises(ImportError_) as info:
        netdsl.check(tmp_path / "a.net")
    error = info.value
    assert error.message == "import cycle: a.net -> b.net -> a.net"
    assert (error.span.file, error.span.line, error.span.column) == (str(b), 2, 1)
    assert error.hint == "move the shared blocks into a file both can import"


def test_self_import_is_a_cycle(tmp_path):
    main = write(tmp_path / "self.net", 'import "self.net"\nnetwork n {\n  input [3, 8, 8]\n}\n')
    with pytest.raises(ImportError_, match=re.escape("import cycle: self.net -> self.net")) as info:
        netdsl.check(main)
    assert (info.value.span.line, info.value.span.column) == (1, 1)


def test_duplicate_definition_across_files(tmp_path):
    write(tmp_path / "lib.net", "block b { relu }\n")
    main = write(tmp_path / "main.net", 'import "lib.net"\nblock b { relu6 }\nnetwork n {\n  input [3, 8, 8]\n}\n')
    with pytest.raises(NameError_) as info:
        netdsl.check(main)
    assert info.value.message == f"'b' is already defined at {tmp_path / 'lib.net'}:1:7"
    assert (info.value.span.line, info.value.span.column) == (2, 7)


def test_syntax_error_in_an_imported_file(tmp_path):
    lib = write(tmp_path / "lib.net", "block b {\n  conv1 = conv(3)\n}\n")
    main = write(tmp_path / "main.net", 'import "lib.net"\nnetwork n {\n  input [3, 8, 8]\n}\n')
    with pytest.raises(SyntaxError_) as info:
        netdsl.check(main)
    assert (info.value.span.file, info.value.span.line, info.value.span.column) == (str(lib), 2, 9)
    assert info.value.hint == "a label is written 'name: layer(...)'"


# ---- the error hierarchy and the checker's purity ------------------------------------------------------

def test_error_classes_share_one_root():
    for cls in (SyntaxError_, NameError_, ShapeError, TypeError_, ParameterError, ImportError_):
        assert issubclass(cls, NetDSLError)
    assert netdsl.NetDSLError is NetDSLError
    assert netdsl.ShapeError is ShapeError and netdsl.ParameterError is ParameterError


def test_checker_never_imports_torch():
    script = ("import sys, netdsl; network = netdsl.check('networks/resnet152.net'); "
              "assert 'torch' not in sys.modules, 'torch was imported'; print(network.params)")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(TORCHVISION_PARAMS["resnet152"])


@pytest.mark.parametrize("expression, quoted", [
    ("-conv", "cannot negate layer conv"), ("-b", "cannot negate block b"), ("-ceil", "cannot negate function ceil"),
    ("-t", "cannot negate tensor t [3, 8, 8]"), ("-in", "cannot negate shape [3, 8, 8]"),
])
def test_values_are_quoted_with_their_type_named_once(tmp_path, expression, quoted):
    """issue 13 item 18: 'got layer layer conv'; every `type value` quotation goes through values.described."""
    path = tmp_path / "n.net"
    path.write_text(f"block b {{ relu }}\nnetwork n {{\n  input [3, 8, 8]\n  tap t\n  let a = {expression}\n}}\n")
    with pytest.raises(TypeError_) as caught:
        netdsl.check(path)
    assert caught.value.message == quoted


# ---- the elaboration memo (NOTE [Elaboration memo] in netdsl/elaborate.py) ---------------------------

class _Forgetful(dict):
    """A memo that remembers nothing: every block instance is built by running its body."""

    def __setitem__(self, key, value):
        pass


ROOT = Path(__file__).resolve().parent.parent


def _checked(program, network, memo, **keywords):
    from netdsl.sizes import check as check_program

    try:
        return repr(check_program(program, network, memo=memo, **keywords))
    except NetDSLError as error:
        return f"{error.format()}"


@pytest.mark.parametrize("input_shape", [None, (3, 97, 131)])
def test_the_memo_gives_the_graph_a_fresh_build_gives(input_shape):
    """Every shipped network (and example), at its size and at another: the same nodes, field for
    field (traces, shortcuts replayed at the other size, errors), with and without the memo."""
    from netdsl.resolve import load

    files = sorted((ROOT / "networks").glob("*.net")) + sorted((ROOT / "examples").rglob("*.net"))
    compared = 0
    for file in files:
        program = load(file)
        if not any(d.span.file == program.main_file for d in program.decls.values()
                   if isinstance(d, (netdsl.ast.NetworkDef, netdsl.ast.VariantDef))):
            continue
        compared += 1
        assert _checked(program, None, {}, input_shape=input_shape) == \
            _checked(program, None, _Forgetful(), input_shape=input_shape), file.name
    assert compared >= 60


def test_the_memo_builds_each_distinct_instance_once():
    from netdsl.resolve import load
    from netdsl.sizes import check as check_program

    memo: dict = {}
    program = load(ROOT / "networks" / "resnet152.net")
    network = check_program(program, memo=memo)
    units = [module for _, module, _ in netdsl.graph.walk(network.root)
             if module.walk_kind == "module" and module.type_name == "bottleneck"]
    assert len(units) == 50
    # built: per stage, the first unit (which strides or widens) and the second (its input differs)
    assert sum(key[0] == id(program.decls["bottleneck"]) for key in memo) == 8


def test_a_remembered_instance_still_counts_towards_the_limits(main):
    """A network over the layer limit through repeated identical blocks fails where a fresh build fails."""
    from netdsl.resolve import load
    from netdsl.sizes import check as check_program

    path = Path(main)
    path.write_text("block unit() {\n  conv(8, 3, pad=1)\n  relu\n}\n"
                    "network n() {\n  input [3, 8, 8]\n  for i in range(10) { unit() }\n}\n")
    program = load(path)
    for limits in (Limits(layers=15), Limits(steps=25)):
        remembered = _checked(program, None, {}, limits=limits)
        assert remembered == _checked(program, None, _Forgetful(), limits=limits)
        assert "more than" in remembered
