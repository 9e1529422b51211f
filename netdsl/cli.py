"""Stage 5 — the command line: `netdsl check | compile | layers`.

Exit codes: 0 success, 1 an error in the user's network (a `NetDSLError`, printed like a
compiler diagnostic on stderr), 2 a usage error, 3 an internal error (a bug in netdsl).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

from . import __version__, api
from .errors import NetDSLError
from .graph import Layer, Network

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: exit 2, no traceback
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a .net file")
    parser.add_argument("-D", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a network parameter (repeatable), e.g. -D classes=10 -D depth=101")
    parser.add_argument("--network", help="which network to use when the file declares several")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="netdsl", description="Check and compile .net network descriptions to PyTorch.")
    parser.add_argument("--version", action="version", version=f"netdsl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    check = commands.add_parser("check", help="type-check a network: shapes and parameter count")
    _common(check)
    check.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    check.add_argument("--input", metavar="CxHxW", help="re-check at this input size, e.g. 3x320x320")
    check.add_argument("--watch", action="store_true", help="re-check whenever the file (or an import) changes")

    compile_ = commands.add_parser("compile", help="compile a network to a TorchScript file")
    _common(compile_)
    compile_.add_argument("-o", "--output",
                          help="output file (default: <network>.pt, .pt2 or .py in the current directory)")
    compile_.add_argument("--format", choices=["torchscript", "export", "onnx", "python"], default="torchscript",
                          help="torchscript (torch.jit.load), export (torch.export program, .pt2), onnx (.onnx) "
                               "or python (standalone module source); default torchscript")
    compile_.add_argument("--optimize", action="store_true",
                          help="for inference: fold BatchNorm into convolutions, eval mode; "
                               "torchscript: also a frozen graph with channels-last weights")
    compile_.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                          help="parameter dtype of the saved model (torchscript, export; onnx: not bfloat16)")
    compile_.add_argument("--device", help="device of the saved model, e.g. cuda (torchscript and export)")

    summary = commands.add_parser("summary", help="per-layer table: shapes, parameters, MACs, memory, receptive field")
    _common(summary)
    summary.add_argument("--depth", type=int, default=None, help="fold modules deeper than N (default: 2)")
    summary.add_argument("--input", metavar="CxHxW", help="check at this input size instead of the declared one")
    summary.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                         help="dtype for activation memory in bytes (default float32)")
    summary.add_argument("--no-biases", action="store_true",
                         help="count parameters without biases, as the course notes' VGG table does")
    summary.add_argument("--json", action="store_true", help="print the same numbers as JSON")

    diff = commands.add_parser("diff", help="compare two networks stage by stage")
    diff.add_argument("file", help="the first .net file")
    diff.add_argument("other", help="the second .net file")
    diff.add_argument("--depth", type=int, default=1, help="compare modules down to depth N (default 1)")
    diff.add_argument("--json", action="store_true", help="print the comparison as JSON")
    diff.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

    draw = commands.add_parser("draw", help="draw a network with Graphviz (folded from the source)")
    _common(draw)
    draw.add_argument("-o", "--output", help="output file: .svg, .png, .pdf or .dot (default <network>.svg)")
    draw.add_argument("--depth", type=int, default=None, help="expand blocks down to depth N")
    draw.add_argument("--rankdir", choices=["TB", "LR"], default="TB", help="layout direction (default TB)")
    draw.add_argument("--watch", action="store_true", help="redraw whenever the file (or an import) changes")

    fmt = commands.add_parser("fmt", help="format .net files in place (canonical layout)")
    fmt.add_argument("files", nargs="+", metavar="FILE",
                     help=".net files or directories; - formats standard input to standard output")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    fmt.add_argument("--diff", action="store_true", help="print a unified diff instead of writing")
    fmt.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

    lsp = commands.add_parser("lsp", help="run the language server over stdio (for editors)")
    lsp.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

    layers = commands.add_parser("layers", help="list the built-in layers and their parameters")
    layers.add_argument("--markdown", action="store_true", help="print the table used in docs/language.md")

    catalog = commands.add_parser("catalog", help="tabulate a directory of networks as Markdown")
    catalog.add_argument("directory", help="a directory of .net files, e.g. networks")
    catalog.add_argument("-o", "--output", help="write the table here (atomically) instead of stdout")
    catalog.add_argument("--check", action="store_true", help="exit 1 if OUTPUT is not up to date")
    catalog.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    return parser


def _overrides(items: list[str]) -> dict:
    result = {}
    for item in items:
        try:
            name, value = api.parse_override(item)
        except ValueError as error:
            raise UsageError(f"-D {error}") from None
        result[name] = value
    return result


class UsageError(Exception):
    """A usage error (exit 2): options that do not go together, a missing program, a bad -D."""


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _human(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return str(count)


def overview(network: Network) -> str:
    """One screen: the network's top-level modules with output shapes and parameters."""
    rows = [("layer", "type", "output", "params")]
    rows.append(("input", "", _fmt_shape(network.input_shape), ""))
    for child in network.root.children():
        kind = child.op if isinstance(child, Layer) else child.type_name
        rows.append((child.name, kind, _fmt_shape(child.out_shape), f"{child.params:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"network {network.name} ({network.file})"]
    for index, row in enumerate(rows):
        lines.append(f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}")
        if index == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append(f"  total: {network.params:,} parameters, {_human(network.macs)} MACs per sample")
    return "\n".join(lines)


def input_shape(text: str | None) -> tuple[int, ...] | None:
    """The `--input CxHxW` option (None when absent); a malformed size is a usage error."""
    if text is None:
        return None
    try:
        return api.parse_input_shape(text)
    except api.OptionError as error:
        raise UsageError(f"--input: {error}") from None


def _cmd_check(args) -> int:
    network = api.check(args.file, network=args.network, input_shape=input_shape(args.input),
                        **_overrides(args.overrides))
    from .sizes import valid_inputs

    sizes = valid_inputs(network)
    if args.json:
        from .cost import analyse, byte_size

        costs = analyse(network)
        activations, feature = costs.totals.activations, costs.feature_map
        print(json.dumps({
            "network": network.name, "file": network.file,
            "input": list(network.input_shape), "output": list(network.output_shape),
            "params": network.params, "macs": network.macs,
            "memory": {"elements": activations, "bytes": byte_size(activations, "float32")},
            "receptive_field": feature.to_json() if feature is not None else None,
            "arguments": {k: _jsonable(v) for k, v in network.arguments.items()},
            "valid_inputs": sizes.as_json(),
        }, indent=2))
    else:
        print(f"{network.file}: ok: network {network.name}, input {_fmt_shape(network.input_shape)} -> "
              f"output {_fmt_shape(network.output_shape)}, {network.params:,} parameters, "
              f"{_human(network.macs)} MACs")
        print(f"  {sizes.describe()}")
    return EXIT_OK


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _cmd_compile(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("compile needs PyTorch: pip install torch") from None
    if args.device and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: no CUDA device is available")
    try:
        network, path = api.compile(args.file, args.output, network=args.network, format=args.format,
                                    dtype=args.dtype, device=args.device, optimize=args.optimize,
                                    **_overrides(args.overrides))
    except api.OptionError as error:
        raise UsageError(str(error)) from None
    print(overview(network))
    how = {"torchscript": "TorchScript; load with torch.jit.load",
           "export": "torch.export program; load with torch.export.load(path).module()",
           "onnx": "ONNX, input 'input', dynamic batch; run with onnxruntime.InferenceSession",
           "python": "PyTorch source; `from FILE import ROOT; model = ROOT()`"}[args.format]
    print(f"wrote {path} ({how}{'; optimized for inference' if args.optimize else ''})")
    return EXIT_OK


def _cmd_layers(args) -> int:
    from .layers import REGISTRY, markdown_table, signature

    if args.markdown:
        print(markdown_table(), end="")
        return EXIT_OK
    for name, layer in sorted(REGISTRY.items()):
        print(f"{signature(layer)}\n    {layer.doc}")
    return EXIT_OK


def _cmd_catalog(args) -> int:
    from pathlib import Path

    from .catalog import entries, markdown
    from .emit import write_atomically

    text = markdown(entries(Path(args.directory)))
    if args.output is None:
        print(text, end="")
    elif args.check:
        current = Path(args.output).read_text(encoding="utf-8") if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run: netdsl catalog {args.directory} -o {args.output}",
                  file=sys.stderr)
            return EXIT_USER
    else:
        write_atomically(args.output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return EXIT_OK


def _lazy(module: str, function: str = "run"):
    """A command implemented in `netdsl.<module>.<function>(args) -> exit code`, imported on use."""
    def command(args) -> int:
        return getattr(importlib.import_module(f"netdsl.{module}"), function)(args)
    return command


COMMANDS = {"check": _cmd_check, "compile": _cmd_compile, "layers": _cmd_layers, "catalog": _cmd_catalog,
            "summary": _lazy("summary"), "diff": _lazy("summary", "run_diff"), "draw": _lazy("draw"),
            "fmt": _lazy("fmt"), "lsp": _lazy("lsp")}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if getattr(args, "watch", False):  # re-run on every save; errors are reported and the loop goes on
        from .watch import watch

        return watch(args.file, lambda: _run(args), stop_on=(EXIT_USAGE, 130, 128 + 13))
    return _run(args)


def _run(args) -> int:
    """One run of the chosen command, with every outcome mapped to an exit code."""
    debug = getattr(args, "debug", False)
    try:
        return COMMANDS[args.command](args)
    except NetDSLError as error:
        if debug:
            traceback.print_exc()
        print(error.format(), file=sys.stderr)
        return EXIT_USER
    except UsageError as error:
        print(f"netdsl: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("netdsl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `netdsl layers | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # killed by SIGPIPE
    except Exception:  # noqa: BLE001 - the last line of defence: report, never crash silently
        print("netdsl: internal error: this is a bug in netdsl; please report it with the traceback below",
              file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL
