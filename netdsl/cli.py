"""Stage 5 — the command line: arguments → one command's output and exit code.

Twelve commands: `netdsl check | compile | summary | calibrate | sweep | diff | draw | fmt | serve | lsp | layers |
catalog`.
Each `_cmd_*` function turns its arguments into calls of the stages' public functions, imported
when the command runs (so that `netdsl check` loads neither torch, rich, graphviz nor pygls);
no stage imports this module.

Exit codes: 0 success, 1 an error in the user's network or files (a `NetDSLError`, printed like a
compiler diagnostic on stderr), 2 a usage error (`UsageError`, or an `OptionError` from the API,
worded with the command's flags), 3 an internal error (a bug in netdsl).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from . import __version__, api
from .cost import AMP_DTYPES, DEVICE_MEMORY, DEVICES, OPTIMIZERS
from .devices import LOCAL_DEFAULT, SHIPPED
from .errors import NetDSLError, OptionError
from .graph import Network
from .text import byte_text, human, plural, shape_text

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class UsageError(Exception):
    """A usage error (exit 2): options that do not go together, a missing program, a bad -D."""


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

    compile_ = commands.add_parser("compile", help="compile a network to TorchScript, a torch.export program, an "
                                                   "AOTInductor package, ONNX or Python source")
    _common(compile_)
    compile_.add_argument("-o", "--output",
                          help="output file; its suffix gives the format unless --format does: .pt torchscript, "
                               ".pt2 export, .onnx onnx, .py python (default: <network>.pt in the current directory)")
    compile_.add_argument("--format", choices=["torchscript", "export", "aoti", "onnx", "python"], default=None,
                          help="torchscript (torch.jit.load), export (torch.export program, .pt2), aoti "
                               "(AOTInductor package, .pt2, compiled C++: torch._inductor.aoti_load_package), onnx "
                               "(.onnx) or python (standalone module source); default: from -o's suffix, else torchscript")
    compile_.add_argument("--optimize", action="store_true",
                          help="for inference: fold BatchNorm into convolutions, eval mode; "
                               "torchscript: also a frozen graph with channels-last weights (netdsl.load adds "
                               "oneDNN's prepacked convolutions where they pay off)")
    compile_.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                          help="parameter dtype of the saved model (torchscript, export, aoti; onnx: not bfloat16)")
    compile_.add_argument("--device", help="device of the saved model, e.g. cuda (torchscript, export and aoti)")
    compile_.add_argument("--max-bytes", metavar="SIZE",
                          help="refuse a network whose float32 weights take more, e.g. 8G, 512MiB "
                               "(default: half the memory available; python needs none)")

    summary = commands.add_parser("summary", help="per-layer table: shapes, parameters, MACs, memory, receptive field")
    _common(summary)
    summary.add_argument("--depth", type=int, default=None,
                         help="fold modules deeper than N (default: 2); 0: the totals in one line")
    summary.add_argument("--input", metavar="CxHxW", help="check at this input size instead of the declared one")
    summary.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                         help="dtype for activation memory in bytes (default float32)")
    summary.add_argument("--no-biases", action="store_true",
                         help="count parameters without biases, as the course notes' VGG table does")
    summary.add_argument("--json", action="store_true", help="print the same numbers as JSON")
    summary.add_argument("--batch", type=int, default=None, metavar="B",
                         help="a batch of B samples: the output column shows it, MACs and memory scale (default 1)")
    summary.add_argument("--train", action="store_true",
                         help="a training step: bytes saved for backward and backward MACs per layer; parameters, "
                              "gradients, optimizer state and the peak in the totals")
    summary.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None,
                         help="optimizer state of the training step (implies --train; default adam; momentum: SGD "
                              "with momentum)")
    summary.add_argument("--amp", choices=list(AMP_DTYPES), default=None,
                         help="the training step under autocast to this dtype (implies --train; default float32)")
    summary.add_argument("--device", choices=list(DEVICES), default=None,
                         help="whose autocast rules and dropout masks the training step follows (implies --train; "
                              "default cuda)")
    summary.add_argument("--fit", metavar="SIZE",
                         help="the largest batch whose training peak fits in SIZE (80GiB, 24GB; implies --train) or a "
                              f"device's memory ({', '.join(DEVICE_MEMORY)})")
    summary.add_argument("--bound", metavar="PROFILE",
                         help="latency lower bounds per layer on a device (inference, at --dtype and --batch): a "
                              f"shipped profile ({', '.join(SHIPPED)}), a calibrated one's name, or a profile's .json")

    calibrate = commands.add_parser("calibrate", help="measure this machine's matmul throughput and memory bandwidth "
                                                      "into a device profile for summary --bound")
    calibrate.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="what to measure (default cpu)")
    calibrate.add_argument("-o", "--output", help="write the profile here (default: PROFILES/NAME.json, PROFILES "
                                                  "being $XDG_CONFIG_HOME/netdsl/profiles or ~/.config/netdsl/profiles)")
    calibrate.add_argument("--name", default=None, help=f"the profile's name (default {LOCAL_DEFAULT})")
    calibrate.add_argument("--threads", type=int, default=None, metavar="N",
                           help="CPU threads torch uses while measuring (default: torch's; record it for --bound)")
    calibrate.add_argument("--quick", action="store_true", help="tiny sizes, well under a second: a smoke test, not a "
                                                                "profile to trust")
    calibrate.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

    sweep = commands.add_parser("sweep", help="check and cost every variant of a network's parameters; the "
                                              "Pareto front")
    sweep.add_argument("file", help="a .net file")
    sweep.add_argument("-D", dest="axes", action="append", default=[], metavar="NAME=VALUES",
                       help="a parameter's values: start:stop:step (stop included) or a,b,c (repeatable)")
    sweep.add_argument("--network", help="which network to use when the file declares several")
    sweep.add_argument("--max-params", metavar="N", help="a limit on parameters, e.g. 25M")
    sweep.add_argument("--max-macs", metavar="N", help="a limit on inference MACs per sample, e.g. 4G")
    sweep.add_argument("--fit", metavar="SIZE", help="the training peak at --batch must fit in SIZE (24GiB, or a "
                                                     "device); also shows the largest batch that fits")
    sweep.add_argument("--batch", type=int, default=1, metavar="B", help="batch of the training peak (default 1)")
    sweep.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam", help="optimizer state (default adam)")
    sweep.add_argument("--amp", choices=list(AMP_DTYPES), default=None, help="the training step under autocast")
    sweep.add_argument("--device", choices=list(DEVICES), default="cuda", help="whose autocast rules (default cuda)")
    sweep.add_argument("--bound", metavar="PROFILE",
                       help="each variant's latency lower bound on a device (an inference forward pass at --batch, "
                            "in --amp's dtype, else float32): a shipped profile (h100, a100, ...) or a JSON file")
    sweep.add_argument("--plot", metavar="OUT", help="write a plot (.png or .svg): MACs or params against memory")
    sweep.add_argument("--x", choices=["macs", "params"], default="macs", help="the plot's x axis (default macs)")
    sweep.add_argument("--y", choices=["memory", "bound"], default="memory",
                       help="the plot's y axis: the training peak (default) or the latency bound (needs --bound)")
    sweep.add_argument("--json", action="store_true", help="print the variants as JSON")
    sweep.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

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
    draw.add_argument("--style", choices=["screen", "paper"], default="screen",
                      help="screen: colours (default); paper: greyscale-safe fills and line styles, with a legend")
    draw.add_argument("--legend", action="store_true", help="add a legend of the colours, shapes and lines used")
    draw.add_argument("--columns", type=int, default=1, metavar="N",
                      help="wrap the drawing's tallest chain (stages, blocks) into N columns (rows with --rankdir LR)")
    draw.add_argument("--size", metavar="WxH", help="shrink to fit WIDTHxHEIGHT inches, or column (3.5x9), "
                                                   "page (7x9.5), slide (13.33x7.5)")
    draw.add_argument("--dpi", type=int, default=None, help="PNG resolution in dots per inch (default 96)")
    draw.add_argument("--watch", action="store_true", help="redraw whenever the file (or an import) changes")

    fmt = commands.add_parser("fmt", help="format .net files in place (canonical layout)")
    fmt.add_argument("files", nargs="+", metavar="FILE",
                     help=".net files or directories; - formats standard input to standard output")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    fmt.add_argument("--diff", action="store_true", help="print a unified diff instead of writing")
    fmt.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

    serve = commands.add_parser("serve", help="a live viewer in the browser: drawing, summary and diff, redrawn on save")
    serve.add_argument("target", nargs="?", default=".", metavar="FILE | DIR",
                       help="a .net file (its directory is served) or a directory (default: the current one)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8765; 0: any free port)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--open", action="store_true", help="open the page in the default web browser")
    serve.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

    lsp = commands.add_parser("lsp", help="run the language server over stdio (for editors)")
    lsp.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")

    layers = commands.add_parser("layers", help="list the built-in layers and their parameters")
    layers.add_argument("names", nargs="*", metavar="NAME",
                        help="only these layers or combinators, each with its parameters in full")
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


def _option(flag: str, text: str | None, parse):
    """A value option read by `parse` (None when absent); a malformed value is a usage error naming `flag`."""
    if text is None:
        return None
    try:
        return parse(text)
    except OptionError as error:
        raise UsageError(f"{flag}: {error.message}") from None


def input_shape(text: str | None) -> tuple[int, ...] | None:
    """The `--input CxHxW` option (None when absent); a malformed size is a usage error."""
    return _option("--input", text, api.parse_input_shape)


def _depth(value: int | None, default: int | None, least: int = 1) -> int | None:
    """The `--depth N` option, `default` when absent; below `least` a usage error."""
    if value is None:
        return default
    if value < least:
        raise UsageError(f"--depth must be at least {least}, got {value}")
    return value


def _flags(error: OptionError) -> str:
    """An `OptionError` in the command line's words: `--dtype`, `--format onnx`."""
    return error.worded(lambda name, value: f"--{name.replace('_', '-')}" + ("" if value is None else f" {value}"))


def _sources(path: str) -> list[Path]:
    """The files the network in `path` is made of, which no output may overwrite."""
    from .resolve import load

    return load(path, tolerant=True).files


def overview(network: Network) -> str:
    """One screen: the network's top-level modules, in the summary's table style."""
    from .cost import analyse
    from .summary import overview as table

    return table(network, analyse(network))


def _aux_text(network: Network) -> str:
    from .summary import aux_text

    return aux_text(network)


# ---- check, compile --------------------------------------------------------------------------

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
            "params": network.params, "params_bytes": api.weight_bytes(network),
            "macs": network.macs, "aux_macs": network.aux_macs,
            "memory": {"elements": activations, "bytes": byte_size(activations, "float32")},
            "receptive_field": feature.to_json() if feature is not None else None,
            "arguments": {k: _jsonable(v) for k, v in network.arguments.items()},
            "valid_inputs": sizes.as_json(),
        }, indent=2))
    else:
        print(f"{network.file}: ok: network {network.name}, input {shape_text(network.input_shape)} -> "
              f"output {shape_text(network.output_shape)}, {network.params:,} parameters "
              f"({byte_text(api.weight_bytes(network))} as float32), "
              f"{human(network.macs)} MACs{_aux_text(network)}")
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
    fmt = api.format_for(args.output, args.format)  # the options first: no torch is imported for them
    api.check_compile_options(fmt, args.dtype, args.device, args.optimize)
    max_bytes = _option("--max-bytes", args.max_bytes, api.parse_size)
    if fmt != "python":  # the Python source needs no torch to be written
        try:
            import torch
        except ImportError:
            raise UsageError("compile needs PyTorch: pip install torch") from None
        if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: no CUDA device is available")
    network, path = api.compile_file(args.file, args.output, network=args.network, format=fmt,
                                     dtype=args.dtype, device=args.device, optimize=args.optimize,
                                     max_bytes=max_bytes, **_overrides(args.overrides))
    print(overview(network))
    how = {"torchscript": "TorchScript; load with " + ("netdsl.load (oneDNN where it pays off) or torch.jit.load"
                                                       if args.optimize else "torch.jit.load"),
           "export": "torch.export program; load with torch.export.load(path).module()",
           "aoti": "AOTInductor package, dynamic batch; load with torch._inductor.aoti_load_package",
           "onnx": "ONNX, input 'input', dynamic batch; run with onnxruntime.InferenceSession",
           "python": "PyTorch source; `from FILE import ROOT; model = ROOT()`"}[fmt]
    print(f"wrote {path} ({how}{'; optimized for inference' if args.optimize else ''})")
    return EXIT_OK


# ---- summary, diff ---------------------------------------------------------------------------

def _cmd_summary(args) -> int:
    """`netdsl summary FILE [--depth N] [--input CxHxW] [--dtype D] [--no-biases] [--batch B] [--json]
    [--train [--optimizer O] [--amp D] [--device D] [--fit SIZE]]`."""
    from . import summary
    from .cost import Precision, analyse

    max_depth = _depth(args.depth, summary.DEFAULT_DEPTH, least=0)
    view = _summary_view(args)
    profile = _profile(args.bound, args.dtype)
    network = api.check(args.file, network=args.network, input_shape=input_shape(args.input),
                        **_overrides(args.overrides))
    costs = analyse(network, Precision(args.amp, args.device or "cuda"))
    if profile is not None:
        from dataclasses import replace

        from .roofline import roofline

        view = replace(view, bound=roofline(network, profile, args.dtype, view.batch))
    listed = [summary.input_row(network, costs)] + (summary.rows(network, costs, max_depth) if max_depth else [])
    if args.json:
        print(json.dumps(summary.summary_json(network, costs, listed, view, max_depth), indent=2))
    elif max_depth == 0:
        print(summary.one_line(network, costs, view))
    else:
        summary.summary_text(network, costs, listed, view)
    return EXIT_OK


def _summary_view(args):
    """The summary's `View` from its options; a training step's options imply --train."""
    from .summary import View

    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    train = args.train or any(value is not None for value in (args.optimizer, args.amp, args.device, args.fit))
    capacity = _option("--fit", args.fit, api.parse_capacity)
    return View(dtype=args.dtype, batch=args.batch or 1, batched=args.batch is not None, no_biases=args.no_biases,
                train=train, optimizer=args.optimizer or "adam", capacity=capacity, capacity_name=args.fit)


def _profile(text: str | None, dtype: str):
    """`--bound PROFILE` (None when absent), with a peak at `dtype`; else a usage error."""
    from . import devices

    profile = _option("--bound", text, devices.find)
    if profile is not None:
        _option("--bound", dtype, profile.peak)
    return profile


def _cmd_calibrate(args) -> int:
    """`netdsl calibrate [--device cpu|cuda] [-o PATH] [--name NAME] [--threads N] [--quick]`."""
    from . import devices
    from .fileio import check_target, write_atomically

    name = args.name or LOCAL_DEFAULT
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"--name {name!r}: use letters, digits, - and _ (it names the profile's file)")
    if name in devices.SHIPPED:
        raise UsageError(f"--name {name}: a shipped profile's name; choose another (e.g. {name}-measured)")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    target = Path(args.output) if args.output else devices.profiles_dir() / f"{name}.json"
    if args.output is None:
        target.parent.mkdir(parents=True, exist_ok=True)
    check_target(target)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("calibrate needs PyTorch: pip install torch") from None
    from . import calibrate

    try:
        profile = calibrate.measure(name, args.device, threads=args.threads, quick=args.quick)
    except calibrate.Unavailable as error:
        raise UsageError(str(error)) from None
    text = json.dumps(profile.to_json(), indent=2) + "\n"
    write_atomically(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    print(calibrate.report(profile))
    print(f"wrote {target} (use it: netdsl summary FILE --bound {name if args.output is None else target})")
    return EXIT_OK


def _cmd_diff(args) -> int:
    """`netdsl diff A.net B.net [--depth N] [--json]`."""
    from . import summary

    max_depth = _depth(args.depth, 1)
    first, second = api.check(args.file), api.check(args.other)
    if args.json:
        print(json.dumps(summary.diff_json(first, second, max_depth), indent=2))
    else:
        summary.diff_text(first, second, max_depth)
    return EXIT_OK


def _cmd_sweep(args) -> int:
    """`netdsl sweep FILE -D name=a:b:s ... [--max-params N] [--max-macs N] [--fit SIZE] [--plot OUT]`."""
    from . import sweep
    from .cost import Precision
    from .fileio import check_target
    from .roofline import BOUND_MEANING
    from .summary import grid, seconds_text

    if not args.axes:
        raise UsageError("give at least one -D NAME=VALUES to sweep, e.g. -D width=0.5:2.0:0.25")
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    precision = Precision(args.amp, args.device)
    profile = _profile(args.bound, sweep.bound_dtype(precision))
    if args.y == "bound" and profile is None:
        raise UsageError("--y bound plots the latency bound: give a device profile with --bound (e.g. --bound h100)")
    if args.plot is not None:
        check_target(args.plot, protect=_sources(args.file))
        if not args.plot.lower().endswith((".png", ".svg")):
            raise UsageError(f"--plot {args.plot}: the plot is written as .png or .svg")
    axes = []
    for item in args.axes:
        try:
            axes.append(sweep.parse_axis(item))
        except OptionError as error:
            raise UsageError(f"-D {error.message}") from None
    limits = sweep.Limits(_option("--max-params", args.max_params, api.parse_count),
                          _option("--max-macs", args.max_macs, api.parse_count),
                          _option("--fit", args.fit, api.parse_capacity))
    variants = sweep.sweep(args.file, axes, network=args.network, batch=args.batch, optimizer=args.optimizer,
                           precision=precision, limits=limits, profile=profile)
    if args.json:
        print(json.dumps({"file": args.file, "batch": args.batch, "optimizer": args.optimizer, "amp": args.amp,
                          "bound_profile": profile.name if profile is not None else None,
                          "variants": [variant.to_json() for variant in variants]}, indent=2))
    else:
        shown = [axis.name for axis in axes]
        columns = [(name, "left") for name in shown] + [("params", "right"), ("MACs", "right"),
                                                        (f"peak at batch {args.batch}", "right")]
        columns += [("fits batch", "right")] if limits.capacity is not None else []
        columns += [(f"bound at batch {args.batch}", "right")] if profile is not None else []
        columns.append(("", "left"))
        cells = []
        for variant in variants:
            row = [variant.values[name] for name in shown]
            if variant.error is not None:
                row += [""] * (len(columns) - len(shown) - 1) + [f"invalid: {variant.error}"]
            else:
                row += [f"{variant.params:,}", human(variant.macs), byte_text(variant.peak)]
                row += [f"{variant.fit:,}"] if limits.capacity is not None else []
                row += [seconds_text(variant.bound)] if profile is not None else []
                row.append("Pareto front" if variant.front else "" if variant.within else "over a limit")
            cells.append(row)
        print(grid(columns, cells))
        checked = sum(variant.error is None for variant in variants)
        print(f"{plural(len(variants), 'variant')}: {checked} checked, {sum(v.within for v in variants)} within the "
              f"limits, {sum(v.front for v in variants)} on the Pareto front (no other within the limits has as "
              "many parameters for no more MACs and memory)")
        if profile is not None:
            print(f"bound: on {profile.name} ({profile.label}), {sweep.bound_dtype(precision)}; {BOUND_MEANING}")
    if args.plot is not None:
        try:
            bound = (f"; bound on {profile.name}, {sweep.bound_dtype(precision)}, batch {args.batch}"
                     if args.y == "bound" else "")
            sweep.plot(variants, args.plot, x=args.x, y=args.y,
                       title=f"{Path(args.file).name}: {', '.join(args.axes)}{bound}")
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install matplotlib") from None
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


# ---- draw ------------------------------------------------------------------------------------

def _cmd_draw(args) -> int:
    """`netdsl draw FILE [-o OUT] [--depth N] [--rankdir TB|LR]`: write DOT, or render it with `dot`."""
    from . import draw
    from .fileio import check_target, write_atomically

    image_format = "svg"
    if args.output is not None:
        check_target(args.output)  # an empty name, a directory, a FIFO: refused before the work
        try:
            image_format = draw.output_format(args.output)
        except OptionError as error:
            raise UsageError(f"-o {args.output}: {error.message}") from None
    max_depth = _depth(args.depth, None)
    if args.dpi is not None and not (image_format == "png" and 10 <= args.dpi <= 2400):
        raise UsageError(f"--dpi {args.dpi}: " + ("between 10 and 2400" if image_format == "png" else
                                                  "a PNG's resolution; SVG and PDF are vector drawings (use --size)"))
    if not 1 <= args.columns <= 20:
        raise UsageError(f"--columns must be between 1 and 20, got {args.columns}")
    size = _option("--size", args.size, draw.parse_size)
    network = api.check(args.file, network=args.network, **_overrides(args.overrides))
    depth = draw.default_depth(network) if max_depth is None else max_depth
    layout = draw.Layout(args.rankdir, args.style, True if args.legend else None, args.columns)
    dot = draw.to_dot(network, depth, layout=layout)
    if size is not None:
        draw.fit(dot, size)
    target = Path(args.output) if args.output is not None else Path(f"{network.name}.svg")
    source = target if image_format is None else target.with_suffix(".dot")
    protect = _sources(args.file)

    def write_source() -> None:
        write_atomically(source, lambda tmp: Path(tmp).write_text(dot.source, encoding="utf-8"), protect)

    if image_format is None:
        write_source()
        print(f"wrote {target} (Graphviz source, depth {depth})")
        return EXIT_OK
    try:
        data = draw.render(dot, target, args.dpi or draw.PNG_DPI)
    except draw.GraphvizMissing:
        write_source()  # the diagram is not lost: render it once Graphviz is installed
        raise UsageError(f"cannot draw {target}: the Graphviz program 'dot' is not installed; wrote the "
                         f"diagram's source to {source} instead. To finish, {draw.INSTALL_HINT}, then run: "
                         f"dot -T{image_format} {source} -o {target}") from None
    write_atomically(target, lambda tmp: Path(tmp).write_bytes(data), protect)
    print(f"wrote {target} (depth {depth})")
    return EXIT_OK


# ---- fmt -------------------------------------------------------------------------------------

def _cmd_fmt(args) -> int:
    """`netdsl fmt FILE... [--check] [--diff]`; `-` formats standard input to standard output."""
    from .fileio import write_atomically
    from .resolve import read_source

    if "-" in args.files:
        if len(args.files) > 1:
            raise UsageError("'-' (standard input) cannot be combined with files")
        text = sys.stdin.read()
        formatted = _formatted(text, "<stdin>", args.debug)
        if formatted is None:
            return EXIT_INTERNAL
        if not args.check and not args.diff:
            sys.stdout.write(formatted)
        return _fmt_report(args, text, formatted, "<stdin>")
    status, changed, unchanged = EXIT_OK, 0, 0
    for path in _net_files(args.files):
        try:
            text = read_source(str(path))
            formatted = _formatted(text, str(path), args.debug)
        except NetDSLError as error:  # a file that does not parse is reported and left alone
            if args.debug:
                traceback.print_exc()
            print(error.format(), file=sys.stderr)
            status = max(status, EXIT_USER)
            continue
        if formatted is None:
            status = EXIT_INTERNAL
            continue
        if formatted == text:
            unchanged += 1
            continue
        changed += 1
        status = max(status, _fmt_report(args, text, formatted, str(path)))
        if not args.check and not args.diff:
            write_atomically(path, lambda tmp: Path(tmp).write_text(formatted, encoding="utf-8"))
            print(f"reformatted {path}", file=sys.stderr)
    if changed + unchanged:  # one file or many: the same closing count
        done = "would be reformatted" if args.check or args.diff else "reformatted"
        counts = [f"{plural(changed, 'file')} {done}"] if changed else []
        counts += [f"{plural(unchanged, 'file')} already formatted"] if unchanged else []
        print(", ".join(counts), file=sys.stderr)
    return status


def _formatted(text: str, name: str, debug: bool) -> str | None:
    """`fmt.format_source`, with a refused result reported (None) rather than raised."""
    from .fmt import FormatterBug, format_source

    try:
        return format_source(text, name)
    except FormatterBug as error:
        if debug:
            traceback.print_exc()
        print(f"netdsl: internal error: {name}: {error}; left as it was. This is a bug in netdsl: "
              "please report it with the file", file=sys.stderr)
        return None


def _fmt_report(args, text: str, formatted: str, name: str) -> int:
    """--diff and --check for one input; exit status 1 if --check finds it unformatted."""
    from .fmt import unified_diff

    if formatted == text:
        return EXIT_OK
    if args.diff:
        sys.stdout.write(unified_diff(text, formatted, name))
    if args.check:
        print(f"would reformat {name}", file=sys.stderr)
        return EXIT_USER
    return EXIT_OK


def _net_files(arguments: list[str]) -> list[Path]:
    """The files named, and the .net files under the directories named (hidden ones skipped)."""
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if not path.is_dir():
            files.append(path)  # a missing file is reported, in order, when it is read
            continue
        found = sorted(p for p in path.rglob("*.net")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not found:
            raise UsageError(f"no .net files in {argument}")
        files += found
    return list(dict.fromkeys(files))


# ---- lsp, layers, catalog --------------------------------------------------------------------

def _cmd_lsp(args) -> int:
    """`netdsl lsp`: serve one editor over stdin/stdout until it disconnects."""
    if args.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    from . import lsp

    lsp.serve()
    return EXIT_OK


def _cmd_serve(args) -> int:
    """`netdsl serve [FILE | DIR] [--port N] [--host H] [--open]`: serve the viewer until Ctrl-C."""
    from . import serve

    port = serve.DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    try:
        viewer = serve.start(args.target, args.host, port)
    except serve.Refused as refused:
        raise UsageError(refused.message) from None
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host} port {port}: {error.strerror or error}") from None
    with viewer:
        print(f"netdsl: serving {viewer.root} at {viewer.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"netdsl: note: --host {args.host}: other machines can reach the viewer", file=sys.stderr)
        if args.open:
            import webbrowser

            webbrowser.open(viewer.url)
        viewer.serve_forever()
    return EXIT_OK


def _cmd_layers(args) -> int:
    from .combinators import COMBINATORS
    from .errors import did_you_mean
    from .layers import PLUGIN_ERRORS, REGISTRY, markdown_table, reference, signature

    for error in PLUGIN_ERRORS:  # docs/extending.md: a broken plugin does not stop netdsl, and is reported here
        print(f"netdsl: warning: an op plugin failed to load: {error}", file=sys.stderr)
    if args.markdown and args.names:
        raise UsageError("--markdown prints the whole table; give it no NAME")
    if args.markdown:
        print(markdown_table(), end="")
        return EXIT_OK
    if not args.names:
        for name, layer in sorted(REGISTRY.items()):
            print(f"{signature(layer)}\n    {layer.doc}")
        return EXIT_OK
    known = [*REGISTRY, *COMBINATORS]
    for name in args.names:
        if name not in known:
            raise UsageError(f"no layer or combinator named '{name}'" + (
                f"; {hint}" if (hint := did_you_mean(name, known)) else "; netdsl layers lists them"))
    for name in args.names:
        if name in REGISTRY:
            print(reference(REGISTRY[name]))
        else:
            print(f"{name} {{ ... }}  (a combinator: docs/language.md)\n    {COMBINATORS[name].doc}")
    return EXIT_OK


def _cmd_catalog(args) -> int:
    from .catalog import entries, markdown
    from .fileio import write_atomically

    items = entries(Path(args.directory))
    text = markdown(items)
    if args.output is None:
        print(text, end="")
    elif args.check:
        current = Path(args.output).read_text(encoding="utf-8") if Path(args.output).exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run: netdsl catalog {args.directory} -o {args.output}",
                  file=sys.stderr)
            return EXIT_USER
    else:
        protect = [file for item in items for file in _sources(str(item.file))]
        write_atomically(args.output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), protect)
    return EXIT_OK


COMMANDS = {"check": _cmd_check, "compile": _cmd_compile, "summary": _cmd_summary, "calibrate": _cmd_calibrate,
            "sweep": _cmd_sweep,
            "diff": _cmd_diff, "draw": _cmd_draw, "fmt": _cmd_fmt, "serve": _cmd_serve, "lsp": _cmd_lsp,
            "layers": _cmd_layers, "catalog": _cmd_catalog}


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
    except OptionError as error:  # a NetDSLError, but a usage error here: worded with the flags
        print(f"netdsl: error: {_flags(error)}", file=sys.stderr)
        return EXIT_USAGE
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
