"""Documentation generated from the code stays current, and its examples still check."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import netdsl
from netdsl.docgen import commands_table, render, sections, stdlib_table
from netdsl.layers import markdown_table

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = ROOT / "docs" / "language.md"


@pytest.mark.parametrize("name", ["docs/language.md", "README.md"])
def test_generated_sections_are_current(name):
    """The layer table, the standard library's blocks and the command synopses are the code's."""
    text = (ROOT / name).read_text()
    assert render(text) == text, f"run: python -m netdsl.docgen {name}"


def test_generated_sections_cover_what_the_code_has():
    text = LANGUAGE.read_text()
    assert set(re.findall(r"<!-- generated: (\w+) -->", text)) == set(sections())
    table = stdlib_table()
    for block in ("conv_bn_relu", "conv_norm_act", "squeeze_excitation", "bottleneck"):
        assert f"| `{block}(" in table
    assert "eps=1e-5" in table and "momentum=0.1" in table
    commands = commands_table()
    assert "netdsl compile" in commands and "{torchscript,export,aoti,onnx,python}" in commands
    assert markdown_table() in text


def test_an_unknown_section_is_refused():
    with pytest.raises(ValueError, match="unknown generated section 'nope'"):
        render("<!-- generated: nope -->\n<!-- end generated -->")


# Every complete example: a ```netdsl block declaring a network, optionally followed by a
# ```text transcript of `$ netdsl check FILE ...` commands whose output must be exactly what
# netdsl prints.
EXAMPLE = re.compile(r"```netdsl\n(.*?)```(?:\s*```text\n(\$ netdsl check (\S+).*?)```)?", re.S)
EXAMPLES = [match.groups() for match in EXAMPLE.finditer(LANGUAGE.read_text())
            if re.search(r"^network \w+.*\{", match.group(1), re.M)]


def _commands(transcript: str) -> list[tuple[list[str], str]]:
    commands = []
    for line in transcript.splitlines():
        if line.startswith("$ netdsl "):
            commands.append((shlex.split(line[len("$ netdsl "):]), []))
        else:
            commands[-1][1].append(line)
    return [(args, "\n".join(output).strip()) for args, output in commands]


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_language_examples(tmp_path, index):
    source, transcript, file_name = EXAMPLES[index]
    path = tmp_path / (file_name or "example.net")
    path.write_text(source)
    if transcript is None:
        assert netdsl.check(path).output_shape
        return
    for args, expected in _commands(transcript):
        result = subprocess.run([sys.executable, "-m", "netdsl", *args], cwd=tmp_path, capture_output=True,
                                text=True)
        assert (result.stdout + result.stderr).strip() == expected


def test_readme_transcripts():
    """README's `$ netdsl check` transcripts are real output of the examples it shows."""
    readme = (ROOT / "README.md").read_text()
    assert "tiny.net: ok: network tiny, input [3, 32, 32] -> output [10], 288,746 parameters" in readme
    block = re.search(r"```\n(import \"std/blocks.net\"\n\n# A small CIFAR-10.*?)```", readme, re.S).group(1)
    path = ROOT / "tests" / "expect" / "tiny.net"
    graph = netdsl.check(path, source=block)
    assert (graph.params, graph.output_shape) == (288_746, (10,))


def test_readme_error_transcript_is_real_output():
    """README's `broken.net` transcript (its source is tests/expect/broken.net) is what netdsl prints."""
    readme = (ROOT / "README.md").read_text()
    transcript = re.search(r"\$ netdsl check broken.net\n(.*?)```", readme, re.S).group(1)
    result = subprocess.run([sys.executable, "-m", "netdsl", "check", "broken.net"], cwd=ROOT / "tests" / "expect",
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (1, transcript)


def test_ci_runs_exactly_the_readme_set_up_block():
    """`.ci/run` takes its two commands from the README's set-up block, which installs Graphviz and
    Chromium with its driver too."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme.split("## Set-up", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "apt-get install -y graphviz chromium chromium-driver &&" in commands[0]  # dot; the viewer's browser tests
    assert commands[0].endswith("netdsl compile networks/resnet152.net")
    assert commands[1].startswith("python -m pytest")
    ci = (root / ".ci" / "run").read_text()
    assert "apt-get" not in ci  # nothing of its own besides the README's commands
    assert 'eval "$setup_cmd"' in ci and 'eval "$test_cmd"' in ci


def test_readme_command_table_names_every_command_and_flag():
    """README's command table is prose, not generated: each command has a row naming its flags."""
    from netdsl.cli import make_parser

    parser = make_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Command line"):]
    table = table[:table.index("\n## ")]
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| `netdsl")]
    for name, sub in commands.choices.items():
        row = " ".join(cell for cell in rows if f"`netdsl {name} " in cell or cell.endswith(f"`netdsl {name}`"))
        assert row, f"README's command table has no row for netdsl {name}"
        for action in sub._actions:
            options = [o for o in action.option_strings if o not in ("-h", "--help", "--debug", "--network")]
            if options:
                assert any(re.search(rf"{re.escape(o)}\b", row) for o in options), \
                    f"README's row for netdsl {name} does not name {'/'.join(options)}"
