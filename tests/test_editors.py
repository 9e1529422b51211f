"""The editor support under editors/: the VS Code folder's JSON files, and the TextMate grammar
checked against the language's own lexer on every real file in networks/ and the standard
library — in pure Python always, and with VS Code's own tokenizer (vscode-textmate on
Oniguruma, under node) when node and those npm packages can be had."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from netdsl.layers import REGISTRY
from netdsl.parse import _parser, keywords
from netdsl.values import BUILTINS

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR_FILE = VSCODE / "syntaxes" / "netdsl.tmLanguage.json"
SOURCES = sorted((ROOT / "networks").glob("*.net")) + sorted((ROOT / "netdsl" / "std").glob("*.net"))


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_textmate", ROOT / "editors" / "generate_textmate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()
GRAMMAR = json.loads(GRAMMAR_FILE.read_text(encoding="utf-8"))


# ---- the files ------------------------------------------------------------------------------

def test_grammar_file_is_generated_and_current():
    assert GRAMMAR_FILE.read_text(encoding="utf-8") == generator.render(), \
        "stale: run python editors/generate_textmate.py"
    assert generator.main(["--check"]) == 0


def test_package_json_wires_language_grammar_and_server():
    package = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    [language] = package["contributes"]["languages"]
    [grammar] = package["contributes"]["grammars"]
    assert language["id"] == grammar["language"] == "netdsl" and language["extensions"] == [".net"]
    assert grammar["scopeName"] == GRAMMAR["scopeName"] == "source.netdsl"
    for relative in (language["configuration"], grammar["path"], package["main"]):
        assert (VSCODE / relative).is_file(), relative
    settings = package["contributes"]["configuration"]["properties"]
    assert settings["netdsl.server.command"]["default"] == "netdsl"
    assert settings["netdsl.server.args"]["default"] == ["lsp"]


def test_language_configuration_comments_and_brackets():
    config = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"] == {"lineComment": "#"}
    pairs = [["{", "}"], ["[", "]"], ["(", ")"]]
    assert config["brackets"] == pairs
    closing = [[pair["open"], pair["close"]] for pair in config["autoClosingPairs"]]
    assert all(pair in closing for pair in pairs + [['"', '"']])
    word = re.compile(config["wordPattern"])
    assert word.fullmatch("conv_bn_relu") and word.fullmatch("1e-5") and not word.fullmatch("a-b")
    increase = re.compile(config["indentationRules"]["increaseIndentPattern"])
    assert increase.match("block unit(c) {") and increase.match("  residual {   # comment")
    assert not increase.match("  a: { conv(1) }")
    assert re.compile(config["indentationRules"]["decreaseIndentPattern"]).match("  }")


def test_every_pattern_compiles_in_python():
    for rule in GRAMMAR["patterns"]:
        re.compile(rule["match"])
        assert rule.get("name", "").endswith(".netdsl") or all(
            capture["name"].endswith(".netdsl") for capture in rule["captures"].values())


def test_keywords_layers_and_functions_come_from_their_sources():
    for word in keywords():
        scopes = _scopes_at(_python_tokens(word), 0, 0)
        assert any(scope.startswith(("keyword.", "storage.type", "constant.language")) for scope in scopes), word
    for name in REGISTRY:
        assert "support.function.layer.netdsl" in _scopes_at(_python_tokens(name), 0, 0), name
    for name in BUILTINS:
        assert "support.function.builtin.netdsl" in _scopes_at(_python_tokens(f"{name}(x)"), 0, 0), name
    assert "support.function.builtin.netdsl" not in _scopes_at(_python_tokens("range"), 0, 0)  # a variable


# ---- tokenizing real files ------------------------------------------------------------------

def _python_tokens(text: str) -> list[list[tuple[int, int, list[str]]]]:
    """TextMate's algorithm for a grammar of `match` rules, in Python: at each position the rule
    whose match starts earliest wins (ties: the first rule), its name and its captures' names
    are the scopes, and scanning resumes after it. Lines carry their newline, as in vscode-textmate."""
    rules = [(re.compile(rule["match"]), rule) for rule in GRAMMAR["patterns"]]
    result = []
    for line in text.split("\n"):
        line += "\n"
        scopes = [["source.netdsl"] for _ in line]
        position = 0
        while position < len(line):
            best = None
            for pattern, rule in rules:
                found = pattern.search(line, position)
                if found and (best is None or found.start() < best[0].start()):
                    best = (found, rule)
            if best is None:
                break
            found, rule = best
            for index in range(found.start(), found.end()):
                if "name" in rule:
                    scopes[index].append(rule["name"])
            for group, capture in rule.get("captures", {}).items():
                if found.start(int(group)) >= 0:
                    for index in range(found.start(int(group)), found.end(int(group))):
                        scopes[index].append(capture["name"])
            position = max(found.end(), position + 1)
        tokens, start = [], 0
        for index in range(1, len(line) + 1):
            if index == len(line) or scopes[index] != scopes[start]:
                tokens.append((start, index, scopes[start]))
                start = index
        result.append(tokens)
    return result


def _scopes_at(lines, line: int, column: int) -> list[str]:
    for start, end, scopes in lines[line]:
        if start <= column < end:
            return scopes
    return []


_SIGNIFICANT = re.compile(r"\S")
_OPERATORS = {"COMPARE_OP", "ADD_OP", "MUL_OP", "POW_OP", "ARROW", "MINUS"}
_PUNCTUATION = {"LPAR", "RPAR", "LSQB", "RSQB", "LBRACE", "RBRACE", "COMMA", "COLON", "DOT"}
_KEYWORD_SCOPE = {word: scope for scope, words in generator.KEYWORD_SCOPES.items() for word in words}


def _expected(token, previous, following) -> str | None:
    """The scope a TextMate tokenizer must give `token` (from lark's lexer), judged by the
    tokens around it; None where any plain scope will do (but then not a keyword's)."""
    kind = token.type
    if kind == "COMMENT":
        return "comment.line.number-sign.netdsl"
    if kind == "STRING":
        return "string.quoted.double.netdsl"
    if kind in ("INT", "FLOAT"):
        return "constant.numeric."
    if kind in _OPERATORS:
        return "keyword.operator."
    if kind == "EQUAL":
        return "keyword.operator.assignment.netdsl"
    if kind in _PUNCTUATION:
        return "punctuation." if kind != "COLON" or previous is None or previous.type not in ("NAME", "BLOCK") else None
    statement_start = previous is None or previous.line < token.line or previous.type in ("LBRACE", "RBRACE", "ARROW")
    if following is not None and following.type == "COLON" and statement_start:
        return "entity.name.tag.label.netdsl"  # also a keyword: the parser's contextual lexer allows `block: ...`
    if kind != "NAME":
        assert token.value in keywords(), token
        if token.value == "in" and following is not None and following.type == "DOT":
            return "variable.language.input.netdsl"
        return _KEYWORD_SCOPE[token.value]
    before = previous.value if previous is not None else None
    if before in ("block", "network", "let"):
        return {"block": "entity.name.function.block.netdsl", "network": "entity.name.type.network.netdsl",
                "let": "variable.other.definition.netdsl"}[before]
    if following is not None and following.type == "EQUAL":
        return "variable.parameter.netdsl"
    if token.value in REGISTRY:
        return "support.function.layer.netdsl"
    if token.value in BUILTINS and following is not None and following.type == "LPAR":
        return "support.function.builtin.netdsl"
    return None


def _mismatches(path: Path, lines) -> list[str]:
    text = path.read_text(encoding="utf-8")
    tokens = [t for t in _parser().lex(text, dont_ignore=True) if t.type != "WS"]
    code = [t for t in tokens if t.type != "COMMENT"]
    neighbours = {id(t): (code[i - 1] if i else None, code[i + 1] if i + 1 < len(code) else None)
                  for i, t in enumerate(code)}
    problems = []
    for token in tokens:
        previous, following = neighbours.get(id(token), (None, None))
        expected = _expected(token, previous, following)
        scopes = _scopes_at(lines, token.line - 1, token.column - 1)
        if expected is None:
            ok = not any(s.startswith(("keyword.", "support.", "constant.", "storage.")) for s in scopes)
        else:
            ok = any(scope.startswith(expected) for scope in scopes)
        if not ok:
            problems.append(f"{path.name}:{token.line}:{token.column} {token.value!r}: "
                            f"expected {expected or 'no keyword scope'}, got {scopes}")
    return problems


def test_python_tokenizer_agrees_with_the_lexer_on_every_real_file():
    assert len(SOURCES) > 50
    problems = [p for path in SOURCES for p in _mismatches(path, _python_tokens(path.read_text(encoding="utf-8")))]
    assert not problems, "\n".join(problems[:20])


def test_the_oracle_catches_a_wrong_grammar():
    global GRAMMAR
    saved = GRAMMAR
    GRAMMAR = {**saved, "patterns": [r for r in saved["patterns"] if r.get("name") != "support.function.layer.netdsl"]}
    try:
        path = ROOT / "networks" / "resnet.net"
        problems = _mismatches(path, _python_tokens(path.read_text(encoding="utf-8")))
    finally:
        GRAMMAR = saved
    assert any("'conv': expected support.function.layer.netdsl" in p for p in problems)


# ---- VS Code's own tokenizer, under node ----------------------------------------------------

TOKENIZE_JS = r"""
const fs = require("fs");
const path = require("path");
const tm = require("vscode-textmate");
const onig = require("vscode-oniguruma");
const [grammarPath, ...files] = process.argv.slice(2);
const wasm = fs.readFileSync(path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm"));
onig.loadWASM(wasm.buffer).then(() => new tm.Registry({
  onigLib: Promise.resolve({
    createOnigScanner: (patterns) => new onig.OnigScanner(patterns),
    createOnigString: (text) => new onig.OnigString(text),
  }),
  loadGrammar: async (scope) =>
    scope === "source.netdsl" ? tm.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath) : null,
}).loadGrammar("source.netdsl")).then((grammar) => {
  const out = {};
  for (const file of files) {
    let state = tm.INITIAL;
    out[file] = fs.readFileSync(file, "utf8").split("\n").map((line) => {
      const result = grammar.tokenizeLine(line, state);
      state = result.ruleStack;
      return result.tokens.map((t) => [t.startIndex, t.endIndex, t.scopes]);
    });
  }
  process.stdout.write(JSON.stringify(out));
});
"""


@pytest.fixture(scope="module")
def textmate_node(request) -> Path:
    """A directory whose node_modules hold vscode-textmate and vscode-oniguruma: installed once
    into pytest's cache; the tests skip when node, npm or the registry is unavailable."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    directory = Path(cache.mkdir("netdsl-textmate") if cache else request.getfixturevalue("tmp_path_factory")
                     .mktemp("netdsl-textmate"))
    if not (directory / "node_modules" / "vscode-textmate").is_dir():
        try:
            subprocess.run(["npm", "install", "--prefix", str(directory), "--no-audit", "--no-fund", "--silent",
                            "--fetch-retries=1", "--fetch-timeout=30000",
                            "vscode-textmate@9", "vscode-oniguruma@2"], check=True, timeout=120,
                           capture_output=True)
        except (subprocess.SubprocessError, OSError) as error:
            pytest.skip(f"cannot install vscode-textmate from npm: {error}")
    return directory


def test_vscode_textmate_agrees_with_the_lexer_on_every_real_file(textmate_node, tmp_path):
    script = textmate_node / "tokenize.js"
    script.write_text(TOKENIZE_JS)
    result = subprocess.run(["node", str(script), str(GRAMMAR_FILE), *map(str, SOURCES)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    tokenized = json.loads(result.stdout)
    problems = [p for path in SOURCES for p in _mismatches(path, tokenized[str(path)])]
    assert not problems, "\n".join(problems[:20])
    for path in SOURCES:  # and the Python tokenizer above is a faithful stand-in
        text = path.read_text(encoding="utf-8")
        assert _character_scopes(tokenized[str(path)], text) == _character_scopes(_python_tokens(text), text), path


def _character_scopes(lines, text: str) -> list[list[str]]:
    return [list(_scopes_at(lines, number, column)) for number, line in enumerate(text.split("\n"))
            for column in range(len(line))]


EXTENSION_JS = r"""
const Module = require("module");
const seen = {};
const load = Module._load;
Module._load = function (request, parent, isMain) {
  if (request === "vscode") {
    return {
      workspace: { getConfiguration: (section) => ({ get: (key, fallback) => fallback }) },
      window: { showWarningMessage: (message) => { seen.warning = message; } },
    };
  }
  if (request === "vscode-languageclient/node") {
    return { LanguageClient: class {
      constructor(id, name, server, client) { Object.assign(seen, { id, name, server, client }); }
      start() { seen.started = true; return Promise.resolve(); }
      stop() { return Promise.resolve(); }
    } };
  }
  return load.apply(this, arguments);
};
const extension = require(process.argv[2]);
const context = { subscriptions: [] };
Promise.resolve(extension.activate(context)).then(() => {
  seen.subscriptions = context.subscriptions.length;
  process.stdout.write(JSON.stringify(seen));
});
"""


def test_vscode_extension_starts_netdsl_lsp(tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    script = tmp_path / "activate.js"
    script.write_text(EXTENSION_JS)
    result = subprocess.run(["node", str(script), str(VSCODE / "extension.js")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["server"] == {"command": "netdsl", "args": ["lsp"]}
    assert {"scheme": "file", "language": "netdsl"} in seen["client"]["documentSelector"]
    assert seen["started"] and seen["subscriptions"] == 1 and "warning" not in seen
