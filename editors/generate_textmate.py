"""Writes editors/vscode/syntaxes/netdsl.tmLanguage.json from the language's own sources.

The keywords come from the Lark grammar (`netdsl.parse.keywords()`), the layer names from the
registry (`netdsl.layers.REGISTRY`), the built-in functions from `netdsl.values.BUILTINS`, and
the name, number, string, comment and operator patterns from the grammar's terminals, so the
highlighting cannot drift from the parser. `tests/test_editors.py` fails when the file is stale.

    python editors/generate_textmate.py           # rewrite the grammar
    python editors/generate_textmate.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from netdsl.fileio import write_atomically
from netdsl.layers import REGISTRY
from netdsl.combinators import COMBINATORS
from netdsl.parse import _parser, keywords
from netdsl.values import BUILTINS

OUTPUT = Path(__file__).resolve().parent / "vscode" / "syntaxes" / "netdsl.tmLanguage.json"

# Every keyword of the grammar gets a scope here; a keyword added to the grammar and not to
# this table stops the generator (and so the test), instead of going unhighlighted.
KEYWORD_SCOPES = {
    "keyword.control.netdsl": ["for", "in", "if", "elif", "else", "then"],
    "keyword.control.import.netdsl": ["import"],
    "storage.type.netdsl": ["block", "network", "def"],
    "keyword.other.statement.netdsl": ["input", "let", "assert", "tap", "from"],
    "keyword.other.combinator.netdsl": ["shortcut", *COMBINATORS],
    "keyword.operator.logical.netdsl": ["and", "or", "not"],
    "keyword.operator.repeat.netdsl": ["x"],
    "constant.language.netdsl": ["true", "false", "none"],
}

# Operator terminals of the grammar and their scopes.
OPERATOR_SCOPES = {
    "ARROW": "keyword.operator.chain.netdsl",
    "POW_OP": "keyword.operator.arithmetic.netdsl",
    "COMPARE_OP": "keyword.operator.comparison.netdsl",
    "MUL_OP": "keyword.operator.arithmetic.netdsl",
    "ADD_OP": "keyword.operator.arithmetic.netdsl",
}


def _words(names) -> str:
    """`\\b(?:a|b|c)\\b`, longest first so that no name hides a longer one."""
    return r"\b(?:" + "|".join(sorted(names, key=lambda n: (-len(n), n))) + r")\b"


def _terminals() -> dict[str, str]:
    return {t.name: t.pattern.to_regexp() for t in _parser().terminals}


def grammar() -> dict:
    """The TextMate grammar. Only `match` rules, tried in order at each position (the earliest
    match wins, ties go to the first rule): simple enough to check in Python as well."""
    stated = {word for words in KEYWORD_SCOPES.values() for word in words}
    if stated != set(keywords()):
        raise SystemExit(f"KEYWORD_SCOPES is out of step with the grammar: missing {sorted(set(keywords()) - stated)}, "
                         f"unknown {sorted(stated - set(keywords()))}")
    terminal = _terminals()
    name = terminal["NAME"]
    number_start = r"(?<![A-Za-z0-9_.])"
    patterns = [
        {"name": "comment.line.number-sign.netdsl", "match": terminal["COMMENT"]},
        {"name": "string.quoted.double.netdsl", "match": terminal["STRING"]},
        {"match": rf"\b(block)\s+({name})",
         "captures": {"1": {"name": "storage.type.netdsl"}, "2": {"name": "entity.name.function.block.netdsl"}}},
        {"match": rf"\b(network)\s+({name})",
         "captures": {"1": {"name": "storage.type.netdsl"}, "2": {"name": "entity.name.type.network.netdsl"}}},
        {"match": rf"\b(let)\s+({name})",
         "captures": {"1": {"name": "keyword.other.statement.netdsl"}, "2": {"name": "variable.other.definition.netdsl"}}},
        # `label:` at the start of a statement: line start, after a brace or after `->`
        {"match": rf"(?:^|(?<=[{{}}])|(?<=->))\s*({name})\s*(:)",
         "captures": {"1": {"name": "entity.name.tag.label.netdsl"},
                      "2": {"name": "punctuation.separator.label.netdsl"}}},
        # `name=` in argument and parameter lists (not `==`)
        {"match": rf"\b({name})\s*(=)(?!=)",
         "captures": {"1": {"name": "variable.parameter.netdsl"}, "2": {"name": "keyword.operator.assignment.netdsl"}}},
        {"name": "variable.language.input.netdsl", "match": r"\bin\b(?=\s*\.)"},
    ]
    patterns += [{"name": scope, "match": _words(words)} for scope, words in KEYWORD_SCOPES.items()]
    patterns += [
        {"name": "support.function.layer.netdsl", "match": _words(REGISTRY)},
        {"name": "support.function.builtin.netdsl", "match": _words(BUILTINS) + r"(?=\s*\()"},
        {"name": "constant.numeric.float.netdsl", "match": f"{number_start}(?:{terminal['FLOAT']})"},
        {"name": "constant.numeric.integer.netdsl", "match": f"{number_start}(?:{terminal['INT']})\\b"},
    ]
    patterns += [{"name": scope, "match": terminal[term]} for term, scope in OPERATOR_SCOPES.items()]
    patterns += [
        {"name": "keyword.operator.assignment.netdsl", "match": "="},
        {"name": "punctuation.separator.netdsl", "match": r"[,:.]"},
        {"name": "punctuation.bracket.netdsl", "match": r"[()\[\]{}]"},
    ]
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "netdsl",
        "scopeName": "source.netdsl",
        "fileTypes": ["net"],
        "comment": "Generated by editors/generate_textmate.py from grammar/netdsl.lark and the layer "
                   "registry; do not edit by hand.",
        "patterns": patterns,
    }


def render() -> str:
    return json.dumps(grammar(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the TextMate grammar for .net files.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the grammar file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date; run: python editors/generate_textmate.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(OUTPUT, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
