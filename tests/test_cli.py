"""The command line, as a user runs it: subprocesses, exit codes, messages, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl import cli

ROOT = Path(__file__).resolve().parent.parent
RESNET18 = str(ROOT / "networks" / "resnet18.net")


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def netdsl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True, cwd=cwd)


def test_check_prints_shapes_and_parameters():
    result = netdsl("check", RESNET18)
    assert result.returncode == 0, result.stderr
    assert "network resnet18, input [3, 224, 224] -> output [1000], 11,689,512 parameters" in result.stdout


def test_check_json_with_overrides():
    result = netdsl("check", RESNET18, "-D", "classes=10", "-D", "depth=34", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["network"] == "resnet18"
    assert report["input"] == [3, 224, 224]
    assert report["output"] == [10]
    torchvision = pytest.importorskip("torchvision")
    assert report["params"] == _count(torchvision.models.resnet34(num_classes=10))
    assert report["arguments"]["depth"] == 34


def test_override_can_name_a_block():
    result = netdsl("check", str(ROOT / "networks" / "resnet50.net"), "-D", "depth=50", "--json")
    assert json.loads(result.stdout)["params"] == 25_557_032


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "netdsl"
    if not script.exists():
        pytest.skip("netdsl console script not installed in this environment")
    result = subprocess.run([str(script), "check", RESNET18], capture_output=True, text=True)
    assert result.returncode == 0 and "11,689,512" in result.stdout


def test_user_error_exit_1_without_traceback(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network bad {\n  input [3, 32, 32]\n  conv(8, 3)\n  fc: linear(10)\n}\n")
    result = netdsl("check", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{bad}:4:7: error: linear expects a flat [features] input, got [8, 30, 30]" in result.stderr
    assert "    4 |   fc: linear(10)" in result.stderr
    assert "hint: insert 'flatten'" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network bad { input [3, 8, 8] nosuchlayer }")
    result = netdsl("check", str(bad), "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "unknown layer or block 'nosuchlayer'" in result.stderr


def test_missing_file_is_a_user_error(tmp_path):
    result = netdsl("check", str(tmp_path / "nope.net"))
    assert result.returncode == 1
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["check"], "the following arguments are required: file"),
    (["check", RESNET18, "-D", "classes"], "-D expected NAME=VALUE, got 'classes'"),
])
def test_usage_errors_exit_2(args, message):
    result = netdsl(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_bad_override_value_is_located():
    result = netdsl("check", RESNET18, "-D", "depth=42")
    assert result.returncode == 1
    assert "key 42 is not in" in result.stderr and "known keys: 18, 34, 50, 101, 152" in result.stderr


def test_unknown_override_suggests(tmp_path):
    result = netdsl("check", RESNET18, "-D", "clases=10")
    assert result.returncode == 1
    assert "network 'resnet18' has no parameter 'clases'" in result.stderr
    assert "did you mean 'classes'?" in result.stderr


def test_internal_error_exit_3(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.COMMANDS, "check", broken)
    assert cli.main(["check", RESNET18]) == 3
    err = capsys.readouterr().err
    assert "this is a bug in netdsl" in err and "RuntimeError: boom" in err


def test_layers_lists_the_registry():
    result = netdsl("layers")
    assert result.returncode == 0
    assert "conv(out, kernel, stride=1, pad=0, dilation=1, groups=1, bias=true)" in result.stdout


def test_layers_names_one_op_in_full():
    """`netdsl layers conv`: every parameter of the op from its registry entry, and a combinator's doc."""
    from netdsl.combinators import COMBINATORS
    from netdsl.layers import REGISTRY

    result = netdsl("layers", "conv", "residual")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["conv(out, kernel, stride=1, pad=0, dilation=1, groups=1, bias=true)",
                         f"    {REGISTRY['conv'].doc}", "    PyTorch: nn.Conv2d"]
    assert "    out: int; required; at least 1 — output channels" in lines
    assert "    pad: pair; default 0; at least 0; also spelled padding — zero padding on each side" in lines
    assert len([line for line in lines if line.startswith("    ") and ": " in line]) == len(REGISTRY["conv"].params) + 1
    assert f"    {COMBINATORS['residual'].doc}" in lines


@pytest.mark.parametrize("args, message", [
    (["convv"], "netdsl: error: no layer or combinator named 'convv'; did you mean 'conv'?"),
    (["relu", "qwertyuiop"], "netdsl: error: no layer or combinator named 'qwertyuiop'; netdsl layers lists them"),
    (["--markdown", "conv"], "netdsl: error: --markdown prints the whole table; give it no NAME"),
])
def test_layers_refuses_unknown_names(args, message):
    result = netdsl("layers", *args)
    assert (result.returncode, result.stdout, result.stderr.strip()) == (2, "", message)


def test_compile_default_output_in_cwd(tmp_path):
    result = netdsl("compile", RESNET18, "-D", "classes=7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote resnet18.pt" in result.stdout
    torchvision = pytest.importorskip("torchvision")
    expected = _count(torchvision.models.resnet18(num_classes=7))
    assert "layer4" in result.stdout and f"total: {expected:,} parameters" in result.stdout
    torch = pytest.importorskip("torch")
    model = torch.jit.load(str(tmp_path / "resnet18.pt"))
    assert tuple(model(torch.randn(1, 3, 64, 64)).shape) == (1, 7)


def test_failed_compile_leaves_existing_output_untouched(tmp_path):
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous")
    bad = tmp_path / "bad.net"
    bad.write_text("network bad { input [3, 8, 8] conv(4, 9) }")
    result = netdsl("compile", str(bad), "-o", str(out))
    assert result.returncode == 1
    assert "conv output would be empty" in result.stderr
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.net", "model.pt"]


def test_closed_pipe_is_not_an_internal_error():
    # The reader goes away before netdsl writes (like `netdsl layers | head -1` on long output).
    code = ("import sys, time; sys.stdout.reconfigure(line_buffering=True); time.sleep(1); "
            "from netdsl.cli import main; sys.exit(main(['layers']))")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait() == 141
    assert "internal error" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("args, message", [
    (["--format", "python", "--dtype", "float16"], "--dtype and --device apply to the torchscript and export formats"),
    (["--format", "onnx", "--dtype", "bfloat16"], "ONNX convolutions have no bfloat16 type"),
])
def test_compile_format_usage_errors(tmp_path, args, message):
    result = netdsl("compile", RESNET18, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_compile_for_cuda_without_a_gpu_is_a_usage_error(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = netdsl("compile", RESNET18, "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2 and "--device cuda: no CUDA device is available" in result.stderr


def test_the_cli_is_on_top_and_only_on_top():
    # No stage imports the command line, and no module reaches for another module's private names.
    import ast as python_ast

    package = ROOT / "netdsl"
    modules = {path.stem for path in package.glob("*.py")}
    problems = []
    for path in sorted(package.glob("*.py")):
        tree = python_ast.parse(path.read_text(encoding="utf-8"))
        siblings = set()  # modules of the package imported by name: `from . import ast, parse`
        for node in python_ast.walk(tree):
            if isinstance(node, python_ast.ImportFrom) and node.level == 1:
                names = [alias.name for alias in node.names]
                # docgen documents the command line, so it sits above it (nothing imports docgen)
                if "cli" in [node.module, *names] and path.name not in ("cli.py", "__main__.py", "docgen.py"):
                    problems.append(f"{path.name}:{node.lineno} imports netdsl.cli")
                if node.module is None:
                    siblings.update(alias.asname or alias.name for alias in node.names)
                problems += [f"{path.name}:{node.lineno} imports {node.module}.{name}" for name in names
                             if name.startswith("_") and not name.startswith("__")]
        for node in python_ast.walk(tree):
            if (isinstance(node, python_ast.Attribute) and isinstance(node.value, python_ast.Name)
                    and node.value.id in siblings & modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                problems.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert problems == []


def test_importing_the_cli_loads_no_command_dependencies():
    heavy = {"torch", "rich", "graphviz", "pygls", "lsprotocol"}
    code = f"import sys, netdsl.cli; print(sorted({heavy!r} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---- issue 15: compile's format from -o, options checked before torch ----------------------------

TINY = "network tiny {\n  input [3, 8, 8]\n  conv(4, 3)\n}\n"


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("suffix, kind", [(".py", "PyTorch source"), (".onnx", "ONNX"), (".pt2", "torch.export"),
                                          (".pt", "TorchScript")])
def test_compile_takes_the_format_from_the_output_suffix(tiny, tmp_path, capsys, suffix, kind):
    if suffix == ".onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / f"t{suffix}"
    assert cli.main(["compile", str(tiny), "-o", str(out)]) == 0
    assert f"wrote {out} ({kind}" in capsys.readouterr().out
    if suffix == ".py":
        assert out.read_text().startswith("# Generated by netdsl")
    else:
        assert not out.read_bytes().startswith(b"# Generated")


@pytest.mark.parametrize("args, message", [
    (["-o", "x.onnx", "--format", "python"],
     "'x.onnx' is a .onnx file, which means --format onnx, but --format python was asked for; change one of them"),
    (["-o", "x.bin"], "cannot tell the format of 'x.bin' from its suffix; give --format or an output ending in .pt "
                      "for torchscript, .pt2 for export, .onnx for onnx, .py for python"),
])
def test_compile_refuses_a_suffix_that_contradicts_or_says_nothing(tiny, tmp_path, capsys, args, message):
    assert cli.main(["compile", str(tiny), *args]) == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"netdsl: error: {message}"
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--format", "python", "--optimize"], "--optimize applies to the torchscript, export and onnx formats"),
    (["--format", "onnx", "--dtype", "bfloat16"], "ONNX convolutions have no bfloat16 type"),
    (["-o", "x.py", "--dtype", "float16"], "--dtype and --device apply to the torchscript and export formats"),
])
def test_compile_options_are_checked_before_torch_is_imported(tiny, tmp_path, args, message):
    """A torch that cannot be imported: the option errors come first, and --format python needs none."""
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    env = {"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(tiny), *args], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 2 and message in run.stderr and "torch was imported" not in run.stderr
    ok = subprocess.run([sys.executable, "-m", "netdsl", "compile", str(tiny), "-o", "t.py"], capture_output=True,
                        text=True, cwd=tmp_path, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "t.py").read_text().startswith("# Generated by netdsl")


def test_catalog_of_a_bad_directory_is_a_located_error(tmp_path):
    (tmp_path / "a.net").write_text("# a network\nnetwork a {\n  input [3]\n}\n")
    (tmp_path / "latin1.net").write_bytes("# caf\xe9\nnetwork b {\n  input [3]\n}\n".encode("latin-1"))
    result = netdsl("catalog", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{tmp_path / 'latin1.net'}:1:6: error: {tmp_path / 'latin1.net'} is not UTF-8 text")
    for directory, problem in [(tmp_path / "absent", "no such directory"), (tmp_path / "a.net", "not a directory")]:
        result = netdsl("catalog", str(directory))
        assert (result.returncode, result.stderr) == (1, f"error: cannot catalog {directory}: {problem}\n")


def test_check_reports_the_weights_in_bytes():
    result = netdsl("check", RESNET18)
    assert "11,689,512 parameters (46.76 MB as float32), 1.81 G MACs" in result.stdout
    report = json.loads(netdsl("check", RESNET18, "--json").stdout)
    assert report["params_bytes"] == 11_689_512 * 4


def test_compile_refuses_weights_beyond_the_limit_before_allocating(tmp_path):
    """issue 13 item 10: 4e18 parameters passed check and compile died in torch's allocator (exit 3)."""
    pytest.importorskip("torch")
    huge = tmp_path / "huge.net"
    huge.write_text("network huge {\n  input [2000000000]\n  linear(2000000000)\n}\n")
    result = netdsl("compile", str(huge), "-o", str(tmp_path / "huge.pt"))
    assert result.returncode == 1, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{huge}:1:9: error: 4,000,000,002,000,000,000 parameters take 16.00 EB "
                            "(16,000,000,008,000,000,000 bytes) as float32, more than ")
    assert first.endswith("(50% of the memory available now); not compiled")
    result = netdsl("compile", RESNET18, "-o", str(tmp_path / "r.pt"), "--max-bytes", "40MB")
    assert result.returncode == 1 and "more than 40.00 MB (the limit given); not compiled" in result.stderr
    assert not (tmp_path / "r.pt").exists()
    result = netdsl("compile", RESNET18, "-o", str(tmp_path / "r.pt"), "--max-bytes", "lots")
    assert (result.returncode, result.stderr) == (
        2, "netdsl: error: --max-bytes: expected a size in bytes like 8G, 512MiB or 1000000, got 'lots'\n")
    result = netdsl("compile", str(huge), "-o", str(tmp_path / "huge.py"))  # source needs no memory
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("text, size", [("1000000", 10**6), ("8G", 8 * 10**9), ("512MiB", 512 * 2**20),
                                        ("1.5kB", 1500), ("2Ti", 2 * 2**40), ("1e9", 10**9), ("8gb", 8 * 10**9),
                                        ("80 GiB", 80 * 2**30), ("25,000,000", 25 * 10**6)])
def test_sizes_in_bytes(text, size):
    from netdsl import api

    assert api.parse_size(text) == size
    assert api.parse_capacity(text) == size  # --fit takes what --max-bytes takes (NOTE [Quantities])


@pytest.mark.parametrize("text, count", [("25M", 25 * 10**6), ("1.5k", 1500), ("1e6", 10**6), ("25,000,000", 25 * 10**6)])
def test_counts_take_the_spellings_of_sizes(text, count):
    from netdsl import api

    assert api.parse_count(text) == count == api.parse_size(text)


@pytest.mark.parametrize("parse, text", [("parse_count", "5MB"), ("parse_count", "5Mi"), ("parse_size", "1,,0"),
                                         ("parse_size", "-1G"), ("parse_size", "1e400"), ("parse_capacity", "0"),
                                         ("parse_capacity", "8GiBs")])
def test_malformed_quantities_are_refused(parse, text):
    from netdsl import api
    from netdsl.errors import OptionError

    with pytest.raises(OptionError, match=f"got {text!r}"):
        getattr(api, parse)(text)
