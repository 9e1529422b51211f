"""Documentation generated from the code: the sections of docs/language.md and README.md that
restate a fact the code owns (the layer registry, the standard library's blocks, the commands
and their flags) are written by this module, so they cannot go stale.

A generated section sits between `<!-- generated: NAME -->` and `<!-- end generated -->`; `render`
rewrites every such section of a text. `python -m netdsl.docgen FILE...` rewrites files in place
(`--check`: change nothing, exit 1 if one is stale); tests/test_docs.py checks the repository's.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import parse
from .ast import BlockDef

STD = Path(__file__).resolve().parent / "std"
SECTION = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def stdlib_table() -> str:
    """Every block of the standard library: its signature as written, and what its comment says."""
    rows = ["| block | import | what it is |", "|---|---|---|"]
    for path in sorted(STD.glob("*.net")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for decl in parse.parse(text, str(path)).decls:
            if not isinstance(decl, BlockDef):
                continue
            header = lines[decl.span.line - 1]
            signature = header[header.index("block") + len("block"):header.rindex("{")].strip()
            comment = []
            for line in reversed(lines[:decl.span.line - 1]):
                if not line.startswith("#"):
                    break
                comment.insert(0, line.lstrip("# ").rstrip())
            rows.append(f"| `{signature}` | `std/{path.name}` | {' '.join(comment)} |")
    return "\n".join(rows) + "\n"


def _synopsis(parser: argparse.ArgumentParser) -> str:
    """`netdsl COMMAND` and its arguments on one line, as argparse's usage writes them."""
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def commands_table() -> str:
    """Each command's synopsis and one-line description, read off the argument parser."""
    from .cli import make_parser

    parser = make_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    blocks = []
    for name, sub in commands.choices.items():
        blocks.append(f"{_synopsis(sub)}\n    {helps[name]}")
    return "```text\n" + "\n".join(blocks) + "\n```\n"


def sections() -> dict:
    from .layers import markdown_table

    return {"layers": markdown_table, "stdlib": stdlib_table, "commands": commands_table}


def render(text: str) -> str:
    """`text` with every generated section written afresh; an unknown section name is an error."""
    makers = sections()

    def fresh(match: re.Match) -> str:
        opening, name, _, closing = match.groups()
        if name not in makers:
            raise ValueError(f"unknown generated section {name!r} (known: {', '.join(makers)})")
        return opening + makers[name]() + closing

    return SECTION.sub(fresh, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdsl.docgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(path)
            if not args.check:
                from .fileio import write_atomically

                write_atomically(path, lambda tmp: Path(tmp).write_text(new, encoding="utf-8"))
    for path in stale:
        print(f"{path}: {'stale' if args.check else 'regenerated'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
