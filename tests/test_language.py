"""The language opened for writing families of networks (issue 12): comprehensions, more functions,
assert messages with values, any label PyTorch accepts, and `name(args) {` refused."""

from __future__ import annotations

import math

import pytest

import netdsl
from netdsl.emit import build, python_source, script
from netdsl.errors import NameError_, ParameterError, SyntaxError_, TypeError_


def check(text: str, **overrides):
    return netdsl.check("lang.net", source=text, **overrides)


def value(expr: str):
    return check(f"network n(v={expr}) {{\n  input [1, 1, 1]\n}}\n").arguments["v"]


@pytest.mark.parametrize("expr, expected", [
    ("[2 * v for v in [1, 2, 3]]", (2, 4, 6)),
    ("[v for v in range(10) if v % 3 == 0]", (0, 3, 6, 9)),
    ("[a * b for a, b in zip([1, 2], [3, 4])]", (3, 8)),
    ("[[i, c] for i, c in enumerate([64, 128])]", ((0, 64), (1, 128))),
    ("{c: c // 4 for c in [64, 128]}", {64: 16, 128: 32}),
    ("[k for k, v in {1: 2, 3: 4}]", (1, 3)),
    ("[if v > 1 then v else 0 for v in [1, 2]]", (0, 2)),
    ("[x for x in []]", ()),
    ("log2(8) + sqrt(16) + exp(0) + log(1) + log(100, 10)", 3.0 + 4.0 + 1.0 + 0.0 + 2.0),
    ("pow(2, 10)", 1024),
    ("pow(4, 0.5)", 2.0),
])
def test_comprehensions_and_math_functions(expr, expected):
    assert value(expr) == expected


def test_regnet_widths_in_the_language():
    """RegNet's width rule (torchvision's BlockParams.from_init_params, RegNetX-400MF's w_0, w_a,
    w_m and depth) written as one comprehension, against the same rule in Python."""
    w0, wa, wm, depth, quant = 24, 24.48, 2.54, 22, 8
    expr = (f"[round({w0} * pow({wm}, round(log(({w0} + {wa} * j) / {w0}) / log({wm}))) / {quant}) * {quant}"
            f" for j in range({depth})]")
    reference = [round(w0 * wm ** round(math.log((w0 + wa * j) / w0) / math.log(wm)) / quant) * quant
                 for j in range(depth)]
    assert list(value(expr)) == reference
    assert len(set(reference)) == 4  # four stages


@pytest.mark.parametrize("expr, cls, message", [
    ("[v for v in 3]", TypeError_, "a comprehension expects a list, got int 3"),
    ("[v for v in [1] if 1]", TypeError_, "a comprehension's 'if' expects a condition, got int 1"),
    ("[a for a, b in [1, 2]]", TypeError_, "cannot unpack 1 into 2 names (a, b)"),
    ("{[1]: 2 for v in [1]}", TypeError_, "dictionary keys must be numbers or strings, got [1]"),
    ("[v for v in range(100000) for w in [1]]", SyntaxError_, "unexpected 'for'"),
    ("log(0)", TypeError_, "log expects a positive number, got 0"),
    ("sqrt(-1)", TypeError_, "sqrt of a negative number: -1"),
    ("pow(10, 1000)", TypeError_, "10 ** 1000 is too large"),
    ("[v for v in range(60000) for_ in [1]]", SyntaxError_, "unexpected"),
])
def test_comprehension_and_function_errors(expr, cls, message):
    with pytest.raises(cls, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("*", r"\*")):
        value(expr)


def test_a_comprehension_counts_towards_the_step_limit():
    with pytest.raises(ParameterError, match="evaluation steps"):
        value("[[w for w in range(1000)] for v in range(1000)]")


def test_assert_messages_interpolate_values():
    with pytest.raises(ParameterError) as caught:
        check('network n(depth=21) {\n  input [1, 1, 1]\n'
              '  assert depth % 6 == 2, "depth {depth} is not 6n + 2 (n = {(depth - 2) / 6}); try {[20, 32]}"\n}\n')
    assert caught.value.message == "depth 21 is not 6n + 2 (n = 3.1666666666666665); try [20, 32]"
    assert (caught.value.span.line, caught.value.span.column) == (3, 3)


LABELS = """
network regnet_like {
  input [3, 8, 8]
  for i in range(2) {
    "block1-{i}": conv(4, 3, pad=1)
  }
  "class": relu
  "with space?": { conv(4, 1) }
}
"""


def test_any_module_name_pytorch_accepts():
    with pytest.raises(NameError_, match="invalid layer name 'with space\\?'"):
        check(LABELS)
    network = check(LABELS.replace('"with space?"', '"x:y"'))
    assert [path for path, _ in network.layers()] == ["block1-0", "block1-1", "class", "x:y.0"]
    source = python_source(network)
    assert 'self.add_module("block1-0", nn.Conv2d(3, 4, kernel_size=3, padding=1))' in source
    assert 'x = getattr(self, "block1-1")(x)' in source and 'getattr(self, "class")(x)' in source
    torch = pytest.importorskip("torch")
    model = build(network)
    assert list(model.state_dict()) == ["block1-0.weight", "block1-0.bias", "block1-1.weight", "block1-1.bias",
                                        "x:y.0.weight", "x:y.0.bias"]
    x = torch.randn(1, 3, 8, 8)
    expected = getattr(model, "x:y")(torch.relu(getattr(model, "block1-1")(getattr(model, "block1-0")(x))))
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(script(model)(x), expected)


@pytest.mark.parametrize("line, hint", [
    ("chunk(2) { relu }", "combinators: add, aux, dense, gate, inception, residual, split; to start a group after "
                          "the call, put it on a line of its own"),
    ("residul(1) { relu }", "did you mean 'residual'?"),
])
def test_a_call_cannot_take_a_body(line, hint):
    with pytest.raises(SyntaxError_) as caught:
        check(f"network n {{\n  input [3, 8, 8]\n  {line}\n}}\n")
    name = line.split("(")[0]
    assert caught.value.message == f"'{name}(...)' cannot take a body: only a combinator is followed by '{{ ... }}'"
    assert (caught.value.span.line, caught.value.span.column) == (3, line.index("{") + 3)
    assert caught.value.hint == hint


def test_a_group_on_its_own_line_after_a_call_is_still_a_group():
    network = check("network n {\n  input [3, 8, 8]\n  conv(4, 1)\n  { relu }\n  relu { relu }\n}\n")
    assert [node.op if node.walk_kind == "layer" else node.type_name for node in network.root.body] == [
        "conv", "group", "relu", "group"]


FUNCTIONS = """
def width(channels, ratio=0.25) = max(8, round(channels * ratio / 8) * 8)
def stages(depth) = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
def factorial(n) = if n <= 1 then 1 else n * factorial(n - 1)

network n(depth=50) {
  input [3, 8, 8]
  for i, count in enumerate(stages(depth)) {
    "stage{i}": conv(width(64 * 2 ** i, ratio=count / 4), 1)
  }
  assert factorial(4) == 24
}
"""


def test_user_functions():
    network = check(FUNCTIONS)
    assert [layer.out_shape[0] for _, layer in network.layers()] == [48, 128, 384, 384]
    assert [layer.out_shape[0] for _, layer in check(FUNCTIONS, depth=18).layers()] == [32, 64, 128, 256]


@pytest.mark.parametrize("source, cls, message", [
    ("def f(n) = f(n)\nnetwork n(v=f(1)) { input [1, 1, 1] }", ParameterError,
     "functions nested more than 100 deep (does 'f' call itself without end?)"),
    ("def f(n) = in.channels\nnetwork n(v=f(1)) { input [1, 1, 1] }", NameError_,
     "'in' is only defined inside a block or after the network's input"),
    ("def f(n) = n\nnetwork n(v=f(1, 2)) { input [1, 1, 1] }", TypeError_, "function 'f' takes 1 arguments (n), got 2"),
    ("def f(n) = n\nnetwork n(v=f(m=1)) { input [1, 1, 1] }", NameError_, "function 'f' has no parameter 'm'"),
    ("def f(n) = n\nnetwork n(v=f()) { input [1, 1, 1] }", TypeError_, "function 'f' is missing its 'n' argument"),
    ("def f(n) = n\nnetwork n { input [1, 1, 1]\n  f(1) }", TypeError_, "'f' is a function and cannot be used as a layer"),
    ("def conv(n) = n\nnetwork n { input [1, 1, 1] }", NameError_, "'conv' is a built-in layer"),
    ("def g(n) = y\nnetwork n(y=1, v=g(1)) { input [1, 1, 1] }", NameError_, "undefined name 'y'"),
])
def test_function_errors(source, cls, message):
    with pytest.raises(cls) as caught:
        check(source)
    assert caught.value.message.startswith(message)


UNTAKEN = """
block unit(c) {
  conv(c, 3, pad=1)
  if c > 1000 { relu6x }
}

network n(flag=false) {
  input [3, 8, 8]
  if flag {
    no_such_layer(3)
  } else {
    conv(4, 3, strid=2)
  }
  let a = [undefined_thing for v in [1]]
  unit(4, widht=2)
}
"""


def test_names_are_resolved_in_every_branch_and_all_reported():
    with pytest.raises(NameError_) as caught:
        check(UNTAKEN)
    errors = [caught.value, *caught.value.also]
    assert [(e.message, e.span.line, e.span.column, e.hint) for e in errors] == [
        ("unknown layer or block 'relu6x'", 4, 17, errors[0].hint),
        ("unknown layer or block 'no_such_layer'", 10, 5, "define it with 'block', import it, or see 'netdsl layers'"),
        ("conv has no parameter 'strid'", 12, 16, "did you mean 'stride'?"),
        ("undefined name 'undefined_thing'", 14, 12, None),
        ("block 'unit' has no parameter 'widht'", 15, 11, "its parameters are: c"),
    ]
    assert errors[0].hint.startswith("did you mean 'relu6'")
    text = caught.value.format()
    assert text.count("error:") == 5 and text.endswith("5 errors")


def test_names_bound_where_they_are_used_are_not_errors():
    network = check("""
block cell(prev, c) {
  add { from prev -> conv(c, 1)  conv(c, 1) }
}
network n(unit=cell) {
  input [3, H, W]
  tap first
  for i, c in enumerate([4, 4]) {
    let k = c // 4
    "c{i}": conv(c, 1)
    tap y
    unit(if i == 0 then first else y, c)
  }
  let table = {k: [v * k for v in range(k)] for k in [1, 2]}
}
""")
    assert network.output_shape == (4, 224, 224)


def test_split_cuts_the_channels_into_its_branches():
    network = check("network n {\n  input [8, 4, 4]\n  split {\n    a: { }\n    b: { conv(6, 1)  relu }\n  }\n}\n")
    assert network.output_shape == (10, 4, 4)
    (merge,) = network.root.body
    assert [arm[0].in_shape for arm in merge.arms] == [(4, 4, 4), (4, 4, 4)]
    assert "part1, part2 = x.chunk(2, 1)" in python_source(network)
    torch = pytest.importorskip("torch")
    model = build(network)
    x = torch.randn(2, 8, 4, 4)
    expected = torch.cat([x[:, :4], torch.relu(model.b[0](x[:, 4:]))], 1)
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(script(model)(x), expected)


@pytest.mark.parametrize("body, message", [
    ("split {\n    conv(4, 1)\n    conv(4, 1)\n    conv(4, 1)\n  }",
     "split: [8, 4, 4] cannot be cut into 3 equal parts along its channels"),
    ("split {\n    for i in range(2) { conv(4, 1) }\n  }", "the branches of 'split' must be written out one by one"),
    ("split {\n    conv(4, 1)\n    maxpool(2)\n  }",
     "split branches disagree on spatial size: branch 1 gives [4, 4, 4], branch 2 gives [4, 2, 2]"),
])
def test_split_errors(body, message):
    with pytest.raises(netdsl.ShapeError) as caught:
        check(f"network n {{\n  input [8, 4, 4]\n  {body}\n}}\n")
    assert caught.value.message == message and caught.value.span.line == 3
