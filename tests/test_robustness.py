"""Robustness: random valid networks agree with PyTorch, damaged input never crashes netdsl,
hostile input is bounded, and nothing from the source text reaches generated code raw.

The long campaign is `python -m netdsl.fuzz --cases 100000` (see docs/fuzz-results.md).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import fuzz
from netdsl.check import Limits
from netdsl.emit import build, python_source, write_atomically
from netdsl.errors import NetDSLError, SyntaxError_

RESNET18 = Path(__file__).resolve().parent.parent / "networks" / "resnet18.net"

ROOT = Path(__file__).resolve().parent.parent
DIFFERENTIAL_CASES = 150
MUTATION_CASES = 600


@pytest.mark.parametrize("seed", range(DIFFERENTIAL_CASES))
def test_random_network_matches_pytorch(seed):
    pytest.importorskip("torch")
    source = fuzz.generate(random.Random(seed))
    assert fuzz.differential(source) == []


def test_generator_covers_the_language():
    sources = "\n".join(fuzz.generate(random.Random(seed)) for seed in range(200))
    for construct in ("residual {", "inception {", "dense {", "gate {", " x ", "unit(", "groups=", "cardinality=",
                      "dilation=", "ceil=true", "count_include_pad=false", "linear(", "maxpool(", "avgpool("):
        assert construct in sources, construct


@pytest.mark.parametrize("chunk", range(6))
def test_mutated_sources_give_success_or_a_located_error(chunk):
    rng = random.Random(1000 + chunk)
    files = fuzz.seeds()
    texts = {path: path.read_text() for path in files}
    outcome = fuzz.Outcome()
    for _ in range(MUTATION_CASES // 6):
        path = rng.choice(files)
        fuzz.robust(fuzz.mutate(texts[path], rng), str(path), outcome)
    assert outcome.bugs == []
    assert outcome.errors > 0  # the mutations really do break files


def test_random_bytes_give_located_errors():
    rng = random.Random(7)
    outcome = fuzz.Outcome()
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))).decode("utf-8", "replace")
        fuzz.robust(junk, "junk.net", outcome)
    assert outcome.bugs == []


def test_non_utf8_file_is_located(tmp_path):
    path = tmp_path / "bad.net"
    path.write_bytes(b"network n {\n  input [3, 8, 8] \xff }\n")
    with pytest.raises(NetDSLError, match=r"is not UTF-8 text \(byte 0xff\)") as info:
        netdsl.check(path)
    assert (info.value.span.line, info.value.span.column) == (2, 19)


# ---- limits: every bound is a clear error, never a hang ------------------------------------

def _check_text(tmp_path, text: str, **kwargs):
    path = tmp_path / "n.net"
    path.write_text(text)
    return netdsl.check(path, **kwargs)


@pytest.mark.parametrize("text, message", [
    ("block b(n) { if n > 0 { b(n - 1) b(n - 1) } }\nnetwork n { input [3, 8, 8] b(60) }",
     "the network takes more than 200,000 evaluation steps to build"),
    ("network n { input [3, 8, 8] { { } x 10000 } x 10000 }", "more than 200,000 evaluation steps"),
    ("block b { b }\nnetwork n { input [3, 8, 8] b }", "blocks nested more than 100 deep (does 'b' call itself?)"),
    ("network n { input [3, 8, 8] relu x 100000 }", "repeat count 100000 exceeds the limit of 10000"),
    ("network n { input [3, 8, 8] let a = 2 ** 100000 }", "2 ** 100000 is too large"),
    ("network n { input [3, 8, 8] let a = range(1000000) }", "range of 1000000 items exceeds the limit"),
    ("network n { input [3, 8, 8] let a = [0] * 1000000 }", "operator '*' cannot combine list"),
    ("network n { input [3, 8, 8] let a = 1e400 }", "number out of range"),
    ("network n { input [3, 65536, 65536] conv(1000, 1) }", "more than the limit of 2147483648"),
    ("network n { input [3, 8, 8] " + "{" * 3000 + "relu" + "}" * 3000 + " }", "nested too deeply"),
])
def test_limits(tmp_path, text, message):
    with pytest.raises(NetDSLError, match=re.escape(message)) as info:
        _check_text(tmp_path, text)
    assert info.value.span is not None


@pytest.mark.parametrize("layer, message", [
    # Found by the long fuzz run: a mutated pooling stride of 0 divided by zero.
    ("maxpool(3, stride=0)", "maxpool: 'stride' must be at least 1, got 0"),
    ("avgpool([2, 0])", "avgpool: 'kernel' must be at least 1, got [2, 0]"),
    ("maxpool(2, pad=-1)", "maxpool: 'pad' must be at least 0, got -1"),
    ("conv(4, 3, dilation=0)", "conv: 'dilation' must be at least 1, got 0"),
])
def test_window_parameters_are_range_checked(tmp_path, layer, message):
    with pytest.raises(NetDSLError, match=re.escape(message)):
        _check_text(tmp_path, f"network n {{ input [3, 8, 8] {layer} }}")


def test_variant_cycle_is_an_error_not_a_hang(tmp_path):
    # Found by the long fuzz run: a mutation turned resnet152.net into a variant of itself.
    with pytest.raises(NetDSLError, match=r"variant cycle: a -> b -> a") as info:
        _check_text(tmp_path, "network a = b(depth=1)\nnetwork b = a(depth=2)\n", network="a")
    assert (info.value.span.line, info.value.span.column) == (2, 13)


def test_fuzzer_reports_a_hang_instead_of_stalling(monkeypatch):
    monkeypatch.setattr(fuzz, "CASE_SECONDS", 0.2)

    def slow_check(*args, **kwargs):
        import time
        time.sleep(5)

    monkeypatch.setattr(fuzz, "check", slow_check)
    outcome = fuzz.Outcome()
    fuzz.robust("network n { input [3, 8, 8] }", "n.net", outcome)
    assert len(outcome.bugs) == 1 and "Hang: no answer after 0.2 s" in outcome.bugs[0]


def test_limits_are_configurable(tmp_path):
    text = "network n { input [3, 8, 8] relu x 50 }"
    assert _check_text(tmp_path, text).output_shape == (3, 8, 8)
    with pytest.raises(NetDSLError, match="more than 20 layers"):
        _check_text(tmp_path, text, limits=Limits(layers=20))


def test_hostile_file_is_bounded_from_the_cli(tmp_path):
    path = tmp_path / "slow.net"
    path.write_text("block b(n) { if n > 0 { b(n - 1) b(n - 1) } }\nnetwork n { input [3, 8, 8] b(60) }")
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "evaluation steps" in result.stderr


def test_import_depth_and_absolute_imports(tmp_path):
    for i in range(70):
        (tmp_path / f"m{i}.net").write_text(f'import "m{i + 1}.net"\n')
    (tmp_path / "m70.net").write_text("block leaf { relu }\n")
    with pytest.raises(NetDSLError, match="imports nested more than 64 deep"):
        netdsl.check(tmp_path / "m0.net")
    (tmp_path / "abs.net").write_text('import "/etc/passwd"\nnetwork n { input [3, 8, 8] }\n')
    with pytest.raises(NetDSLError, match="imports are relative paths to .net files") as info:
        netdsl.check(tmp_path / "abs.net")
    assert (info.value.span.line, info.value.span.column) == (1, 1)


# ---- nothing from the source reaches generated code raw ------------------------------------

SMUGGLE = [
    'network n { input [3, 8, 8] "a = __import__(\'os\')": relu }',
    'network n { input [3, 8, 8] "x\\nimport os": relu }',
    'network n { input [3, 8, 8] __class__: relu }',
    'network n { input [3, 8, 8] forward: relu }',
    'network n { input [3, 8, 8] dropout(p="0.5); import os") }',
    'network n { input [3, 8, 8] stochastic_depth(0.1, mode="row\'); import os; (\'") }',
]


@pytest.mark.parametrize("text", SMUGGLE)
def test_code_cannot_be_smuggled_through_names_or_strings(tmp_path, text):
    with pytest.raises(NetDSLError):
        _check_text(tmp_path, text)


def test_python_keywords_as_labels_are_emitted_as_strings(tmp_path):
    """A keyword is a name PyTorch accepts (issue 12); it never reaches the source as code."""
    source = python_source(_check_text(tmp_path, 'network n { input [3, 8, 8] "import": relu lambda: relu }'))
    assert 'self.add_module("import", nn.ReLU(' in source
    assert 'x = getattr(self, "import")(x)' in source and 'x = getattr(self, "lambda")(x)' in source
    compile(source, "<generated>", "exec")


def test_generated_source_contains_only_validated_names(tmp_path):
    evil_dir = tmp_path / "d"
    evil_dir.mkdir()
    path = evil_dir / "evil\nimport os\nos.system('echo pwned')\n.net"
    path.write_text('block exec(n) { lambda_: conv(n, 1) }\n'
                    'network print { input [3, 8, 8] eval_: exec(4) "os{1}": relu }\n')
    source = python_source(netdsl.check(path))
    lines = source.splitlines()
    assert not any(line.lstrip().startswith(("import os", "os.system")) for line in lines)
    assert lines[0] == ("# Generated by netdsl from evil\\nimport os\\nos.system('echo pwned')\\n.net "
                        "(network print).")
    assert all(line.startswith(("#", "import torch", "from torch", "class ", " ", "ROOT = ")) or not line
               for line in source.splitlines())
    torch = pytest.importorskip("torch")
    model = netdsl.build(path)
    assert [name for name, _ in model.named_children()] == ["eval_", "os1"]
    scripted = torch.jit.script(model)
    assert tuple(scripted(torch.randn(1, 3, 8, 8)).shape) == (1, 4, 8, 8)


def test_interrupted_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "model.pt"

    def interrupted(tmp):
        Path(tmp).write_bytes(b"half a model")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, interrupted)
    assert list(tmp_path.iterdir()) == []


def test_tensor_loading_uses_weights_only():
    # netdsl itself loads no tensors today; any torch.load added later must pass weights_only=True.
    for path in (ROOT / "netdsl").rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, f"{path.name}: {call}"


def test_deep_nesting_inside_a_lark_callback_is_located(tmp_path):
    # Found by the long fuzz run: a RecursionError raised inside lark's transformer arrives
    # wrapped in lark's VisitError.
    from lark.exceptions import VisitError

    from netdsl import parse as parse_module

    class Deep(parse_module._ToAst):
        def body(self, meta, children):
            raise RecursionError("maximum recursion depth exceeded")

    original = parse_module._ToAst
    parse_module._ToAst = Deep
    try:
        with pytest.raises(NetDSLError, match="nested too deeply to parse") as info:
            parse_module.parse("network n { input [3, 8, 8] }", "n.net")
    finally:
        parse_module._ToAst = original
    assert not isinstance(info.value, VisitError)
    assert (info.value.span.line, info.value.span.column) == (1, 1)


def test_overlong_import_name_is_a_located_import_error(tmp_path):
    # Found by a fuzz run: the file system's "File name too long" escaped as OSError.
    name = "r" + "-" * 400 + ".net"
    with pytest.raises(NetDSLError, match=r"cannot find 'r-+\.net'") as info:
        _check_text(tmp_path, f'import "{name}"\nnetwork n {{ input [3, 8, 8] }}\n')
    assert (info.value.span.line, info.value.span.column) == (1, 1)


# ---- issue 13: labels, generated names, literals, -D values ---------------------------------------

def test_every_nn_module_member_is_refused_as_a_label(tmp_path):
    """The refused names are read off torch itself (netdsl/module_members.txt): every attribute of
    the class and of an instance — _modules, _apply, _call_impl, T_destination, ..."""
    torch = pytest.importorskip("torch")
    from netdsl.names import MODULE_MEMBERS

    members = {n for n in set(dir(torch.nn.Module)) | set(dir(torch.nn.Module())) if not n.startswith("__")}
    assert members <= MODULE_MEMBERS, sorted(members - MODULE_MEMBERS)
    for name in ("_modules", "_parameters", "_buffers", "_version", "_apply", "_call_impl", "_slow_forward",
                 "_wrapped_call_impl", "_get_name", "T_destination"):
        with pytest.raises(NetDSLError, match=f"'{name}' cannot name a layer: it is reserved by torch.nn.Module"):
            _check_text(tmp_path, f'network n {{ input [3, 8, 8] "{name}": relu }}')


def test_a_named_tensor_never_shadows_a_builtin_the_code_uses(tmp_path):
    torch = pytest.importorskip("torch")
    text = ('network n { input [3, 8, 8]\n  tap getattr\n  conv(4, 1)\n  "a-b": relu\n'
            '  tap int\n  add { from getattr -> conv(4, 1)  from int }\n}\n')
    network = _check_text(tmp_path, text)
    source = python_source(network)
    assert "getattr = x" not in source and "getattr2 = x" in source
    model = build(network)
    x = torch.randn(1, 3, 8, 8)
    expected = getattr(model, "2")(x) + torch.relu(getattr(model, "0")(x))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("literal", ["9" * 5000, "1" + "0" * 100, str(2 ** 300)])
def test_huge_integer_literals_are_located_errors(tmp_path, literal):
    with pytest.raises(SyntaxError_, match=f"integer literal of {len(literal):,} digits is too large") as caught:
        _check_text(tmp_path, f"network n(c={literal}) {{ input [3, 8, 8] }}")
    assert len(caught.value.format()) < 1000  # the literal is quoted shortened
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", str(RESNET18), "-D", f"classes={literal}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "too large" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value, message", [
    ("-" * 50000 + "1", "the -D value is nested too deeply to parse"),
    ("not " * 20000 + "true", "nested too deeply"),
    ("1 +", "invalid expression '1 +' in -D value"),
])
def test_deep_or_broken_d_values_are_located_errors(value, message):
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", str(RESNET18), "-D", f"classes={value}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (1, 2) and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("statement", [
    "let d = [[[[1] * 1000] * 1000] * 1000] * 1000\n  assert d",
    "let d = [[[1] * 1000] * 1000 for i in range(1000)]",
    "let d = {i: [[1] * 1000] * 1000 for i in range(3)}",
    "let d = zip([[1] * 1000] * 1000, [[1] * 1000] * 1000)",
    "let d = [range(100000)] * 100",
])
def test_values_are_bounded_counting_shared_lists(tmp_path, statement):
    """issue 13 item 13: a list of a million shared lists took minutes to quote or compare."""
    with pytest.raises(NetDSLError, match="a value of more than 1,000,000 elements") as caught:
        _check_text(tmp_path, f"network n {{\n  input [3, 8, 8]\n  {statement}\n}}\n")
    assert caught.value.span.line == 3 and len(caught.value.format()) < 1000


def test_large_values_are_quoted_shortened_and_compared_quickly(tmp_path):
    text = ("network n {\n  input [3, 8, 8]\n  let a = [[1] * 1000] * 999\n  let b = [[1] * 1000] * 999\n"
            "  assert a == b\n  conv(a, 3)\n}\n")
    with pytest.raises(NetDSLError, match=r"'out' expects an integer, got list \[\[1, 1, ") as caught:
        _check_text(tmp_path, text)
    message = caught.value.message
    assert len(message) < 400 and message.endswith("...")
    assert netdsl.values.show(tuple(range(10)), width=12) == "[0, 1, 2,..."
    assert netdsl.values.show((1, (2, "x"), {"k": None})) == '[1, [2, "x"], {"k": none}]'


def test_fuzzer_covers_the_hardening_classes(tmp_path):
    """issue 13: shared-list values, other line endings, huge sizes and odd paths stay fuzzed."""
    rng = random.Random(0)
    text = (ROOT / "networks" / "alexnet.net").read_text()
    mutated = [fuzz.mutate(text, rng) for _ in range(300)]
    assert any("let shared = [[" in m for m in mutated) and any("\r" in m for m in mutated)
    assert any("\ufeff" in m for m in mutated) and any(re.search(r"input \[[^\]]*(1000000|2 \*\* 40)", m) for m in mutated)
    assert any('"_modules":' in m for m in mutated) and any("getattr" in m for m in mutated)
    outcome, kinds = fuzz.Outcome(), set()
    for case in range(80):
        path, kind = fuzz.odd_path(rng, tmp_path, case)
        kinds.add(kind)
        fuzz.robust_path(path, kind, outcome)
    assert kinds == set(fuzz.ODD_KINDS) and outcome.bugs == []
    assert outcome.errors > 40 and outcome.ok > 0


@pytest.mark.parametrize("share, option", [(0.05, " --differential-share 0.05"), (fuzz.DIFFERENTIAL_SHARE, "")])
def test_fuzz_report_gives_the_command_that_reproduces_the_run(share, option):
    """The report's command names every option that changes the cases (the share did not)."""
    empty = {"cases": 0, "agreed": 0, "checked_ok": 0, "located_errors": 0, "random_bytes": 0, "bugs": []}
    result = {"cases": 100000, "seed": 2026, "jobs": 2, "differential_share": share, "seconds": 1.0,
              "differential": empty, "mutation": empty, "paths": empty}
    command = f"`python -m netdsl.fuzz --cases 100000 --seed 2026 --jobs 2{option}`"
    assert command in fuzz.report_markdown(result)
