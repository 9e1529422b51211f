"""The Python API (`import netdsl`): complete, documented, cheap to import, and worded for Python."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest

import netdsl

TINY = "network tiny { input [3, 8, 8] conv(4, 3) relu }\n"


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    return path


def test_all_names_every_public_name_and_each_is_documented():
    public = {name for name, value in vars(netdsl).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public | set(netdsl._LAZY) == set(netdsl.__all__)  # the lazy ones appear once used
    for name in netdsl.__all__:
        value = getattr(netdsl, name)
        assert inspect.getdoc(value), f"netdsl.{name} has no docstring"
    assert netdsl.compile is netdsl.compile_file
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        netdsl.nonsense  # noqa: B018


def test_import_loads_neither_torch_nor_graphviz_until_to_dot():
    code = ("import sys, netdsl\n"
            "assert not {'torch', 'graphviz', 'rich'} & set(sys.modules), sorted({'torch', 'graphviz', 'rich'} & set(sys.modules))\n"
            "assert not {'netdsl.emit', 'netdsl.optimize', 'netdsl.draw'} & set(sys.modules)\n"
            "from netdsl import to_dot\n"
            "assert 'graphviz' in sys.modules and 'torch' not in sys.modules\n"
            "from netdsl.draw import to_dot as drawn\n"
            "assert to_dot is drawn\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_api_functions_work_together(tiny):
    graph = netdsl.check(tiny)
    assert netdsl.analyse(graph).totals.params == graph.params == 4 * 3 * 3 * 3 + 4
    assert "nn.Conv2d(3, 4, kernel_size=3)" in netdsl.python_source(graph)
    assert netdsl.valid_inputs(graph).describe().startswith("valid inputs: H >= 3, W >= 3")
    pytest.importorskip("graphviz")
    assert "conv" in netdsl.to_dot(graph).source


@pytest.mark.parametrize("options, message", [
    (dict(format="python", dtype="float16"),
     "dtype and device apply to the torchscript and export formats (dtype to onnx too)"),
    (dict(format="python", optimize=True), "optimize applies to the torchscript, export and onnx formats"),
    (dict(format="onnx", dtype="bfloat16"), "ONNX convolutions have no bfloat16 type; use dtype='float16' or float32"),
])
def test_option_errors_speak_of_python_arguments(tiny, tmp_path, options, message):
    with pytest.raises(netdsl.OptionError) as error:
        netdsl.compile_file(tiny, tmp_path / "out", **options)
    assert error.value.message == message
    assert isinstance(error.value, netdsl.NetDSLError) and isinstance(error.value, ValueError)
    assert not (tmp_path / "out").exists()


def test_the_command_line_words_option_errors_with_its_flags():
    error = netdsl.OptionError.naming("{dtype} and {device} apply ...; use {format=export}")
    assert error.message == "dtype and device apply ...; use format='export'"
    assert error.worded(lambda name, value: f"--{name}" + (f" {value}" if value else "")) == (
        "--dtype and --device apply ...; use --format export")
    assert netdsl.OptionError("plain {braces} stay").worded(lambda name, value: "?") == "plain {braces} stay"
