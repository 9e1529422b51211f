"""`netdsl sweep` (netdsl/sweep.py): value ranges, every variant against `netdsl.check` and the cost
model, the limits, the Pareto front, the plot, and the command's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl import cli
from netdsl.errors import NetDSLError, OptionError
from netdsl.sweep import Axis, Limits, Variant, _mark_front, parse_axis, sweep

ROOT = Path(__file__).resolve().parent.parent
RESNET = ROOT / "networks" / "resnet.net"


@pytest.mark.parametrize("text, axis", [
    ("width=0.5:1.0:0.25", Axis("width", ("0.5", "0.75", "1.0"))),
    ("depth=18:50:16", Axis("depth", ("18", "34", "50"))),  # integers stay integers; the stop is included
    ("depth=18,34, 50", Axis("depth", ("18", "34", "50"))),
    ("units=[1, 2],[3, 4]", Axis("units", ("[1, 2]", "[3, 4]"))),  # commas inside a list belong to it
    ('arch="small","large"', Axis("arch", ('"small"', '"large"'))),
    ("width=1.5", Axis("width", ("1.5",))),
])
def test_axes(text, axis):
    assert parse_axis(text) == axis


@pytest.mark.parametrize("text, message", [
    ("width", "expected NAME=VALUES"),
    ("width=2:1:0.5", "needs start <= stop and a step above 0"),
    ("width=1:2:0", "needs start <= stop and a step above 0"),
    ("width=0:1:0.00001", "more than 10,000"),
    ("width=1,,2", "an empty value"),
    ("width=a:b:c", "expected a number"),
])
def test_bad_axes(text, message):
    with pytest.raises(OptionError, match=message):
        parse_axis(text)


def test_every_variant_is_what_check_and_the_cost_model_say():
    variants = sweep(RESNET, [parse_axis("depth=18,34,50,19")], batch=8, limits=Limits(max_params=22_000_000))
    assert [v.values for v in variants] == [{"depth": "18"}, {"depth": "34"}, {"depth": "50"}, {"depth": "19"}]
    for variant in variants[:3]:
        network = netdsl.check(RESNET, depth=int(variant.values["depth"]))
        assert (variant.params, variant.macs) == (network.params, network.macs)
        assert variant.peak == netdsl.training(network).memory(8, "adam")["peak"]
    assert [v.within for v in variants] == [True, True, False, False]  # ResNet-50 has 25.6 M parameters
    assert [v.front for v in variants] == [True, True, False, False]
    assert variants[3].error.startswith("key 19 is not in {18: ")  # the checker's message; the sweep goes on


def test_the_front_keeps_what_no_other_variant_beats():
    def variant(params, macs, peak):
        return Variant({}, params, macs, peak, within=True)

    variants = [variant(10, 5, 5), variant(10, 4, 5), variant(12, 6, 6), variant(9, 6, 6), variant(10, 4, 5)]
    _mark_front(variants)
    # (10, 5, 5) loses to (10, 4, 5); (9, 6, 6) to (12, 6, 6); equal variants do not beat each other
    assert [v.front for v in variants] == [False, True, True, False, True]


def test_sweep_command_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "front.svg"
    assert cli.main(["sweep", str(RESNET), "-D", "depth=18,34", "-D", "width=64,128", "--fit", "24GiB",
                     "--batch", "16", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["depth", "width", "params", "MACs", "peak", "at", "batch", "16", "fits", "batch"]
    assert lines[2].split()[:3] == ["18", "64", "11,689,512"] and lines[2].endswith("Pareto front")
    assert "invalid: basic blocks support only groups=1 and base_width=64" in lines[3]
    assert "4 variants: 2 checked, 2 within the limits, 2 on the Pareto front" in out
    assert plot.read_text().lstrip().startswith("<?xml") and f"wrote {plot}" in out
    assert cli.main(["sweep", str(RESNET), "-D", "depth=18,34", "--json", "--fit", "h100"]) == 0
    report = json.loads(capsys.readouterr().out)
    training = netdsl.training(RESNET, depth=34)
    assert report["variants"][1]["fit_batch"] == training.fit(80 * 2**30, "adam")
    assert report["variants"][1]["peak_bytes"] == training.memory(1, "adam")["peak"]


@pytest.mark.parametrize("args, message", [
    ([], "give at least one -D NAME=VALUES"),
    (["-D", "depth=50:18:1"], "-D depth: a range start:stop:step needs start <= stop"),
    (["-D", "depth=18", "--max-params", "lots"], "--max-params: expected a count like 25M"),
    (["-D", "depth=18", "--fit", "huge"], "--fit: expected a memory size"),
    (["-D", "depth=18", "--plot", "out.pdf"], "--plot out.pdf: the plot is written as .png or .svg"),
    (["-D", "depth=18", "--batch", "0"], "--batch must be at least 1"),
    (["-D", "depth=18", "--y", "bound"], "--y bound plots the latency bound: give a device profile with --bound"),
    (["-D", "depth=18", "--bound", "nosuch"], "--bound: no device profile 'nosuch'"),
])
def test_sweep_usage_errors(args, message):
    result = subprocess.run([sys.executable, "-m", "netdsl", "sweep", str(RESNET), *args], capture_output=True,
                            text=True)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_sweep_benchmark_runs():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--quick"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "efficientnet.net: 9 variants (9 checked) in" in result.stdout and "variants per second" in result.stdout
    assert result.stdout.count("checked again, every block instance remembered:") == 3


def test_an_undefined_name_fails_the_sweep_once_located(tmp_path):
    """Names are resolved once per sweep (not per variant): a misspelt name is one located error."""
    source = tmp_path / "bad.net"
    source.write_text("network bad(width=1) {\n  input [3, 32, 32]\n  conv(widht * 8, 3)\n}\n")
    with pytest.raises(NetDSLError) as raised:
        sweep(source, [parse_axis("width=1,2")])
    assert (raised.value.span.line, raised.value.span.column) == (3, 8)
    assert "undefined name 'widht'" in raised.value.message


def test_a_sweep_bound_is_what_summary_bound_says(tmp_path, capsys):
    """--bound: each variant's latency bound is `summary --bound`'s for that variant, at the sweep's
    batch and in autocast's dtype; --y bound plots it."""
    pytest.importorskip("matplotlib")
    plot = tmp_path / "bound.png"
    assert cli.main(["sweep", str(RESNET), "-D", "depth=18,34,7", "--batch", "8", "--amp", "bfloat16",
                     "--bound", "h100", "--json", "--plot", str(plot), "--y", "bound"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bound_profile"] == "h100" and plot.read_bytes().startswith(b"\x89PNG")
    for variant in report["variants"][:2]:
        depth = variant["values"]["depth"]
        assert cli.main(["summary", str(RESNET), "-D", f"depth={depth}", "--batch", "8", "--dtype", "bfloat16",
                         "--bound", "h100", "--json"]) == 0
        assert variant["bound_seconds"] == json.loads(capsys.readouterr().out)["bound"]["seconds"] > 0
    assert report["variants"][2]["error"] is not None and report["variants"][2]["bound_seconds"] is None
    assert cli.main(["sweep", str(RESNET), "-D", "depth=18", "--bound", "a100"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-4:] == ["bound", "at", "batch", "1"]
    assert "bound: on a100" in out and "a lower bound, not a prediction" in out
