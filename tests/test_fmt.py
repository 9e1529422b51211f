"""`netdsl fmt`: canonical layout, comments kept, idempotent, meaning preserved, and the CLI.

The repository's own .net files are the main corpus: they are kept formatted, and random
"messy" versions of them (spaces, tabs, indentation and blank lines scrambled, or extra line
breaks put between tokens) must format back to the same layout and the same checked network.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lark import Lark

import netdsl
from netdsl import cli, fmt, resolve
from netdsl.errors import NetDSLError
from netdsl.fmt import FormatterBug, format_source
from netdsl.parse import grammar_path

ROOT = Path(__file__).resolve().parent.parent
NETWORK_FILES = sorted((ROOT / "networks").glob("*.net"))
STD_FILES = sorted((ROOT / "netdsl" / "std").glob("*.net"))
ALL_FILES = NETWORK_FILES + STD_FILES
ids = [f"{p.parent.name}/{p.name}" for p in ALL_FILES]


def netdsl_cli(*args, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "netdsl", *args], capture_output=True, text=True,
                          input=stdin, cwd=cwd)


# ---- an independent view of a file: its tokens, from the grammar's own lexer -----------------

_LEXER = Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr")


def lexemes(text: str) -> list:
    """Every token, white space included, as lark's lexer sees it."""
    return list(_LEXER.lex(text, dont_ignore=True))


def code_and_comments(text: str) -> list[tuple[str, str]]:
    """The file as ("code" | "comment", text) in order: what formatting must not change."""
    return [("comment" if t.type == "COMMENT" else "code", t.value.rstrip())
            for t in lexemes(text) if t.type != "WS"]


def comments_with_place(text: str) -> list[tuple[str, int, bool]]:
    """Each comment's text, how many code tokens precede it, and whether code precedes it on its line."""
    result, code, line_has_code = [], 0, False
    for token in lexemes(text):
        if token.type == "WS":
            line_has_code = line_has_code and "\n" not in token.value
        elif token.type == "COMMENT":
            result.append((token.value.rstrip(), code, line_has_code))
        else:
            code += 1
            line_has_code = True
    return result


def messy(text: str, rng: random.Random, line_breaks: bool = False) -> str:
    """`text` with its white space scrambled: random spaces and tabs between tokens (also where
    there were none), random indentation and trailing blanks, more blank lines where there was
    one. With `line_breaks`, also new line breaks between code tokens."""
    out = []
    tokens = lexemes(text)
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.type == "WS":
            if "\n" in token.value:
                breaks = token.value.count("\n")
                breaks += rng.randint(0, 2) if breaks > 1 else 0
                out.append("".join(rng.choice(["", " ", "\t "]) + "\n" for _ in range(breaks)))
                out.append(rng.choice(["", " ", "    ", "\t", "       "]))
            else:
                out.append(rng.choice([" ", "  ", "\t", "     "]))
            continue
        out.append(token.value)
        if following is not None and following.type not in ("WS", "COMMENT") and token.type != "COMMENT":
            if line_breaks and rng.random() < 0.15:
                out.append("\n" + " " * rng.randint(0, 12))
            elif rng.random() < 0.5:
                out.append(rng.choice([" ", "  ", "\t"]))
    return "".join(out)


def layer_listing(path: Path, source: str | None = None) -> list[tuple]:
    network = netdsl.check(path, source=source)
    return [(name, layer.op, repr(layer.args), layer.in_shape, layer.out_shape, layer.params, layer.macs)
            for name, layer in network.layers()]


# ---- the repository's files ------------------------------------------------------------------

def test_repository_files_are_formatted():
    result = netdsl_cli("fmt", "--check", str(ROOT / "networks"), str(ROOT / "netdsl" / "std"))
    assert result.returncode == 0, result.stderr
    assert f"{len(ALL_FILES)} files already formatted" in result.stderr


@pytest.mark.parametrize("path", ALL_FILES, ids=ids)
def test_messy_file_formats_back_to_the_same_layout(path):
    text = path.read_text(encoding="utf-8")
    scrambled = messy(text, random.Random(path.name))
    assert scrambled != text
    assert format_source(scrambled, str(path)) == text


@pytest.mark.parametrize("path", ALL_FILES, ids=ids)
def test_new_line_breaks_keep_comments_and_formatting_is_idempotent(path):
    text = messy(path.read_text(encoding="utf-8"), random.Random(f"breaks {path.name}"), line_breaks=True)
    formatted = format_source(text, str(path))
    assert format_source(formatted, str(path)) == formatted
    assert code_and_comments(formatted) == code_and_comments(text)
    assert comments_with_place(formatted) == comments_with_place(text)
    assert all(line == line.rstrip() for line in formatted.splitlines())
    assert formatted.endswith("\n") and not formatted.endswith("\n\n")
    assert "\n\n\n" not in formatted


@pytest.mark.parametrize("path", NETWORK_FILES, ids=[p.name for p in NETWORK_FILES])
def test_formatting_keeps_every_layer(path):
    """The checked network of a messy version and of its formatted text: same layers, paths,
    arguments, shapes, parameters and MACs."""
    text = messy(path.read_text(encoding="utf-8"), random.Random(f"layers {path.name}"), line_breaks=True)
    formatted = format_source(text, str(path))
    before = layer_listing(path, source=text)
    assert before and layer_listing(path, source=formatted) == before


def test_formatting_the_standard_library_keeps_every_layer(tmp_path, monkeypatch):
    """std/*.net declare no network: check every network (most import them, directly or not)
    with the formatted text of messy copies in place of the real standard library."""
    before = {p.name: layer_listing(p) for p in NETWORK_FILES}
    rng = random.Random("std")
    for path in STD_FILES:
        formatted = format_source(messy(path.read_text(encoding="utf-8"), rng, line_breaks=True), str(path))
        (tmp_path / path.name).write_text(formatted, encoding="utf-8")
    monkeypatch.setattr(resolve, "STDLIB", tmp_path)
    assert {p.name: layer_listing(p) for p in NETWORK_FILES} == before


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, content) of each fenced code block of a Markdown text."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)


def documentation_examples() -> list[tuple[str, str]]:
    """The .net examples: docs/language.md's ```netdsl blocks and README's plain blocks
    (all netdsl there, except the `$ netdsl ...` transcripts)."""
    language = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return ([("language.md", body) for info, body in fenced_blocks(language) if info == "netdsl"]
            + [("README.md", body) for info, body in fenced_blocks(readme) if not info and not body.startswith("$")])


def test_documentation_examples_are_formatted():
    examples = documentation_examples()
    assert len(examples) >= 15
    unformatted = [f"{name}: {source.splitlines()[0]}" for name, source in examples
                   if format_source(source, name) != source]
    assert unformatted == [], "format these examples with `netdsl fmt -`"


def test_documentation_transcript(tmp_path):
    """The before/after example under "Formatting" in docs/language.md is what netdsl does."""
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    source, command, printed, formatted = re.search(
        r"```text\n\$ cat messy\.net\n(.*?)\$ netdsl (fmt .*?)\n(.*?)\n\$ cat messy\.net\n(.*?)```", text, re.S
    ).groups()
    (tmp_path / "messy.net").write_text(source)
    result = netdsl_cli(*command.split(), cwd=tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, printed + "\n")
    assert (tmp_path / "messy.net").read_text() == formatted


# ---- the canonical layout, by example ---------------------------------------------------------

GOLDEN = {
    "spaces around operators, none in arguments": (
        "network n(a = 1,b=2) {\n"
        "input [ 3,32 , 32 ]\n"
        "let x=a+b*2-(a - 1)//2%3\n"
        "let y = -a ** 2 + x[ 1 : ] [ : -1 ][0] + in . channels\n"
        "let z = { 1 : [1,2], 2:[ ] } [a]\n"
        "let w = if a>1 and not b==2 then max( a , b ) else -1\n"
        "conv1 : conv( 8 , 3 , stride = 2 , pad = - 1 )  x  2\n"
        "}\n",
        "network n(a=1, b=2) {\n"
        "  input [3, 32, 32]\n"
        "  let x = a + b * 2 - (a - 1) // 2 % 3\n"
        "  let y = -a ** 2 + x[1:][:-1][0] + in.channels\n"
        "  let z = {1: [1, 2], 2: []}[a]\n"
        "  let w = if a > 1 and not b == 2 then max(a, b) else -1\n"
        "  conv1: conv(8, 3, stride=2, pad=-1) x 2\n"
        "}\n",
    ),
    "bodies, labels, blank lines, trailing white space": (
        "\n\n# header   \nimport   \"std/blocks.net\"\n"
        "block   b ( out ) {\n\n"
        "        residual { conv(out,3)   bn } shortcut conv(out, 1)\n"
        "    \"unit{ 1 }\" :{ relu }\n"
        "    if out>8 {bn}elif out<2 { } else{relu}\n\n\n\n"
        "   a: {  }\n\n"
        "}\n\n\n\n"
        "network v = n( a = 2 )\n\n\n",
        "# header\nimport \"std/blocks.net\"\n"
        "block b(out) {\n"
        "  residual { conv(out, 3)  bn } shortcut conv(out, 1)\n"
        "  \"unit{ 1 }\": { relu }\n"
        "  if out > 8 { bn } elif out < 2 {} else { relu }\n\n"
        "  a: {}\n"
        "}\n\n"
        "network v = n(a=2)\n",
    ),
    "continuation lines: after a bracket, hanging, closing, chains, else": (
        "network n(a=1,\n"
        "  b=2) {\n"
        "input [3, 8, 8]\n"
        "let t = [\n"
        "      [1, 2],\n"
        "   [3, 4],\n"
        "      ]\n"
        "conv(8, 3,\n"
        "pad=1)\n"
        "    a: relu -> b: relu\n"
        "          -> c: relu\n"
        "relu\n"
        " -> relu\n"
        "     -> inception {\n"
        "   relu\n"
        "     }\n"
        "if a > 1 { relu }\n"
        "     else { bn }\n"
        "}\n",
        "network n(a=1,\n"
        "          b=2) {\n"
        "  input [3, 8, 8]\n"
        "  let t = [\n"
        "    [1, 2],\n"
        "    [3, 4],\n"
        "  ]\n"
        "  conv(8, 3,\n"
        "       pad=1)\n"
        "  a: relu -> b: relu\n"
        "          -> c: relu\n"
        "  relu\n"
        "    -> relu\n"
        "    -> inception {\n"
        "      relu\n"
        "    }\n"
        "  if a > 1 { relu }\n"
        "  else { bn }\n"
        "}\n",
    ),
    "comments: own line at the code's depth, trailing ones in columns": (
        "network n {\n"
        "# first\n"
        "          input [3, 224, 224]   # the input\n"
        "  conv1: conv(64, 7, stride=2, pad=3) # 112\n"
        "  bn\n"
        "  maxpool(3, stride=2)# 56\n"
        "\n"
        "  relu #  short\n"
        "  conv(64, 3, pad=1, groups=1, dilation=1, bias=false, stride=1)       # long: its own column\n"
        "        # indented too far\n"
        "  flatten  # a paragraph of its own\n"
        "}\n",
        "network n {\n"
        "  # first\n"
        "  input [3, 224, 224]                  # the input\n"
        "  conv1: conv(64, 7, stride=2, pad=3)  # 112\n"
        "  bn\n"
        "  maxpool(3, stride=2)                 # 56\n"
        "\n"
        "  relu  #  short\n"
        "  conv(64, 3, pad=1, groups=1, dilation=1, bias=false, stride=1)  # long: its own column\n"
        "  # indented too far\n"
        "  flatten  # a paragraph of its own\n"
        "}\n",
    ),
    "statements sharing a line line up in columns": (
        "network n {\n"
        "  input [3, 224, 224]\n"
        "  features: {\n"
        "    conv(64, 11, stride=4, pad=2) relu # 0, 1\n"
        "    maxpool(3, stride=2)   # 2\n"
        "    conv(192, 5, pad=2) relu   # 3, 4\n"
        "  }\n"
        "  classifier: { dropout(0.5) linear(10) }\n"
        "}\n",
        "network n {\n"
        "  input [3, 224, 224]\n"
        "  features: {\n"
        "    conv(64, 11, stride=4, pad=2)  relu  # 0, 1\n"
        "    maxpool(3, stride=2)                 # 2\n"
        "    conv(192, 5, pad=2)            relu  # 3, 4\n"
        "  }\n"
        "  classifier: { dropout(0.5)  linear(10) }\n"
        "}\n",
    ),
    "line endings and tabs": (
        "network n {\r\n\tinput [3, 8, 8]\r\n\tconv(3, 3)\t# x\r\n}",
        "network n {\n  input [3, 8, 8]\n  conv(3, 3)  # x\n}\n",
    ),
    "empty and comment-only files": ("\n\n  \n", ""),
    "comment-only file": ("   # only\n\n\n\n# comments   \n\n", "# only\n\n# comments\n"),
}


@pytest.mark.parametrize("source, expected", GOLDEN.values(), ids=GOLDEN.keys())
def test_canonical_layout(source, expected):
    assert format_source(source, "golden.net") == expected
    assert format_source(expected, "golden.net") == expected


def test_a_number_before_a_dot_keeps_its_space():
    # `1.x` would read as the number `1.` followed by a name
    source = "network n {\n  input [3, 8, 8]\n  let a = 1 .x\n}\n"
    assert format_source(source, "n.net") == source


def test_deep_nesting_formats():
    depth = 2000
    source = f"network n {{\n  input [3, 8, 8]\n  let a = {'(' * depth}1{')' * depth}\n}}\n"
    assert format_source(source, "deep.net") == source


def test_syntax_error_is_located():
    with pytest.raises(NetDSLError, match="unexpected '3'") as error:
        format_source("network n {\n  input [3, 8, 8]\n  conv(3 3)\n}\n", "bad.net")
    assert error.value.format().startswith("bad.net:3:")


def test_a_result_that_would_change_the_meaning_is_refused(monkeypatch):
    real_render = fmt._render
    monkeypatch.setattr(fmt, "_render", lambda lines: real_render(lines).replace("stride=2", "stride=3"))
    with pytest.raises(FormatterBug, match="different program"):
        format_source("network n {\n  input [3, 8, 8]\n  conv(3,3, stride=2)\n}\n", "n.net")
    monkeypatch.setattr(fmt, "_render", lambda lines: real_render(lines).replace("# c", "# changed"))
    with pytest.raises(FormatterBug, match="moves a token or a comment"):
        format_source("network n {\n  input [3, 8, 8]  # c\n}\n", "n.net")


# ---- the command line -------------------------------------------------------------------------

MESSY = "network n {\ninput [3,8,8]\n    conv(3,3)   # c\n}\n"
FORMATTED = "network n {\n  input [3, 8, 8]\n  conv(3, 3)  # c\n}\n"


def test_check_lists_unformatted_files_and_changes_nothing(tmp_path):
    (tmp_path / "a.net").write_text(MESSY)
    (tmp_path / "b.net").write_text(FORMATTED)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.net").write_text(MESSY)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.net").write_text(MESSY)
    result = netdsl_cli("fmt", "--check", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"would reformat {tmp_path / 'a.net'}",
        f"would reformat {tmp_path / 'sub' / 'c.net'}",
        "2 files would be reformatted, 1 file already formatted",
    ]
    assert result.stdout == ""
    assert (tmp_path / "a.net").read_text() == MESSY
    one = netdsl_cli("fmt", "--check", str(tmp_path / "b.net"))
    assert (one.returncode, one.stderr) == (0, "1 file already formatted\n")  # as for a directory, not silence
    one = netdsl_cli("fmt", "--check", str(tmp_path / "a.net"))
    assert (one.returncode, one.stderr.splitlines()) == (1, [f"would reformat {tmp_path / 'a.net'}",
                                                             "1 file would be reformatted"])


def test_diff_prints_a_unified_diff_and_writes_nothing(tmp_path):
    path = tmp_path / "a.net"
    path.write_text(MESSY)
    result = netdsl_cli("fmt", "--diff", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"--- {path}\t(original)\n+++ {path}\t(formatted)\n@@ ")
    assert "\n-input [3,8,8]\n-    conv(3,3)   # c\n+  input [3, 8, 8]\n+  conv(3, 3)  # c\n }\n" in result.stdout
    assert path.read_text() == MESSY
    assert netdsl_cli("fmt", "--diff", "--check", str(path)).returncode == 1


def test_rewrites_in_place_only_when_changed(tmp_path):
    messy_file, formatted_file = tmp_path / "a.net", tmp_path / "b.net"
    messy_file.write_text(MESSY)
    formatted_file.write_text(FORMATTED)
    before = formatted_file.stat().st_mtime_ns
    result = netdsl_cli("fmt", str(messy_file), str(formatted_file))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"reformatted {messy_file}",
                                          "1 file reformatted, 1 file already formatted"]
    assert messy_file.read_text() == FORMATTED
    assert formatted_file.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.net", "b.net"]  # no temporary left


def test_stdin_to_stdout():
    result = netdsl_cli("fmt", "-", stdin=MESSY)
    assert (result.returncode, result.stdout, result.stderr) == (0, FORMATTED, "")
    check = netdsl_cli("fmt", "--check", "-", stdin=MESSY)
    assert (check.returncode, check.stdout, check.stderr) == (1, "", "would reformat <stdin>\n")
    assert netdsl_cli("fmt", "--check", "-", stdin=FORMATTED).returncode == 0


def test_syntax_error_exit_1_and_file_untouched(tmp_path):
    bad, good = tmp_path / "bad.net", tmp_path / "good.net"
    bad.write_text("network n {\n  input [3,8,8]\n  conv(3 3)\n}\n")
    good.write_text(MESSY)
    result = netdsl_cli("fmt", str(bad), str(good))
    assert result.returncode == 1
    assert f"{bad}:3:10: error: unexpected '3'" in result.stderr
    assert "Traceback" not in result.stderr
    assert bad.read_text() == "network n {\n  input [3,8,8]\n  conv(3 3)\n}\n"
    assert good.read_text() == FORMATTED  # the other files are still formatted
    stdin = netdsl_cli("fmt", "-", stdin="network n {\n")
    assert stdin.returncode == 1 and stdin.stdout == "" and "<stdin>:1:12: error" in stdin.stderr


def test_usage_errors(tmp_path):
    result = netdsl_cli("fmt", "-", str(tmp_path))
    assert result.returncode == 2 and "cannot be combined" in result.stderr
    empty = netdsl_cli("fmt", str(tmp_path))
    assert empty.returncode == 2 and f"no .net files in {tmp_path}" in empty.stderr
    missing = netdsl_cli("fmt", str(tmp_path / "missing.net"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_refused_result_exit_3_and_file_untouched(tmp_path, monkeypatch, capsys):
    path = tmp_path / "a.net"
    path.write_text(MESSY)
    monkeypatch.setattr(fmt, "_render", lambda lines: "network n {\n}\n")
    assert cli.main(["fmt", str(path)]) == cli.EXIT_INTERNAL
    assert "internal error" in capsys.readouterr().err
    assert path.read_text() == MESSY


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_bom_and_crlf_or_cr_are_formatted_to_lf(newline):
    text = "\ufeff" + newline.join(["# head", "network n {", "    input [3]", "}", ""])
    assert format_source(text, "f.net") == "# head\nnetwork n {\n  input [3]\n}\n"
