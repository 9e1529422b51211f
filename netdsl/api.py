"""The Python API: a .net file → checked `Network` → `nn.Module`, or a saved model or source file.

`check` never imports torch; `build` and `compile_file` do, lazily. Also the parsers of the
command line's `-D NAME=VALUE` and `--input CxHxW` values, which are not flag-specific.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import ast
from .limits import MEMORY_SHARE, Limits, default_max_bytes
from .errors import NetDSLError, OptionError, ParameterError, Span, TypeError_, remember_source
from .fileio import check_target
from .graph import Network
from .parse import parse_expr, without_collection
from .resolve import Program, load
from .scopes import check_names
from .sizes import check as check_program  # (also loads `netdsl.check` before __init__ binds the name `check`)
from .text import byte_text


def _python_value(value, name: str):
    if isinstance(value, (list, tuple)):
        return tuple(_python_value(v, name) for v in value)
    if isinstance(value, dict):
        return {k: _python_value(v, name) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str, ast.Expr)):
        return value
    raise TypeError_(f"override '{name}': cannot use a Python {type(value).__name__} as a netdsl value")


def parse_override(text: str) -> tuple[str, ast.Expr]:
    """`name=value` from the command line; the value is a netdsl expression (`101`, `[1, 2]`, `basic`)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier() or not value.strip():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    where = f"<-D {name}>"
    remember_source(where, value)
    return name, parse_expr(value.strip(), Span(where, 1, 1, 1, len(value.strip()) + 1), "-D value")


def parse_input_shape(text: str) -> tuple[int, ...]:
    """`3x320x320` (channels x height x width) or `784` (features) from the command line."""
    parts = text.strip().lower().replace("\u00d7", "x").split("x")
    if not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise OptionError(f"expected an input size like 3x224x224 (or 784 for a flat input), got {text!r}")
    return tuple(int(part) for part in parts)


# NOTE: [Quantities] A count (`--max-params 25M`) and a size in bytes (`--max-bytes 8G`, `--fit 80GiB`)
# are read by one scanner, so that every flag takes the same spellings: a number (`1.5`, `1e9`,
# `25,000,000`), then a decimal prefix k, M, G, T or P (powers of 1000), in any case; a size may also
# take a binary one (Ki, Mi, Gi, Ti, Pi: powers of 1024) and a trailing B.
_QUANTITY = re.compile(r"(\d+(?:[,_]\d+)*(?:\.\d*)?(?:e\+?\d+)?)\s*(?:([kmgtp])(i?))?(b?)", re.IGNORECASE)


def _quantity(text: str, in_bytes: bool) -> int | None:
    """`text` as a whole number (NOTE [Quantities]), or None if it is not one of the spellings."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None or (not in_bytes and (match[3] or match[4])):
        return None
    number, prefix, binary = match[1].replace(",", "").replace("_", ""), (match[2] or "").lower(), match[3]
    power = "kmgtp".index(prefix) + 1 if prefix else 0
    value = float(number) * ((1024 if binary else 1000) ** power)
    return int(value) if value < float("inf") else None


def parse_count(text: str) -> int:
    """`25M`, `4G`, `1.5K`, `1e6`, `1000000`: a count in decimal units, as `netdsl summary` prints them
    (NOTE [Quantities])."""
    count = _quantity(text, in_bytes=False)
    if count is None:
        raise OptionError(f"expected a count like 25M, 4G or 1000000, got {text!r}")
    return count


def parse_size(text: str) -> int:
    """`8G`, `512MiB`, `1e9`, `1000000`: a number of bytes from the command line (NOTE [Quantities])."""
    size = _quantity(text, in_bytes=True)
    if size is None:
        raise OptionError(f"expected a size in bytes like 8G, 512MiB or 1000000, got {text!r}")
    return size


def parse_capacity(text: str) -> int:
    """A memory to fit in: a size in bytes above 0 (`80GiB`, `24GB`: NOTE [Quantities]) or a device's
    name (`h100`: `netdsl.cost.DEVICE_MEMORY`)."""
    from .cost import DEVICE_MEMORY

    spelled = text.strip().lower()
    if spelled in DEVICE_MEMORY:
        return DEVICE_MEMORY[spelled] * 2**30
    size = _quantity(spelled, in_bytes=True)
    if not size:
        raise OptionError(f"expected a memory size like 80GiB or 24GB, or a device: "
                          f"{', '.join(DEVICE_MEMORY)}; got {text!r}")
    return size


def training(network: Network | str | os.PathLike, *, amp: str | None = None, device: str = "cuda",
             **check_arguments):
    """A training step's cost (`netdsl.cost.Training`): `.memory(batch, optimizer)` in bytes (its
    "peak" and the parts), `.fit(capacity_bytes, optimizer)` the largest batch, `.macs` per sample,
    forward and backward. `amp` ("bfloat16", "float16") runs it under autocast by `device`'s
    ("cuda", "cpu") rules. A path is checked first, with `check`'s keyword arguments."""
    from .cost import AMP_DTYPES, DEVICES, Precision, analyse

    if amp not in (None, *AMP_DTYPES):
        raise OptionError.naming(f"{{amp={amp}}}: choose {' or '.join(AMP_DTYPES)} (or none for float32)")
    if device not in DEVICES:
        raise OptionError.naming(f"{{device={device}}}: autocast rules are known for {' and '.join(DEVICES)}")
    if not isinstance(network, Network):
        network = check(network, **check_arguments)
    return analyse(network, Precision(amp, device)).training


def check(path: str | os.PathLike, *, network: str | None = None, source: str | None = None,
          limits: Limits = Limits(), input_shape: tuple[int, ...] | None = None, **overrides) -> Network:
    """Parse, resolve and check a .net file; returns the annotated graph (raises `NetDSLError`).

    `input_shape` (e.g. `(3, 320, 320)`) checks the network at that size instead of its declared
    `input [...]`; it must have the declared number of dimensions."""
    return _checked(path, network, source, limits, input_shape, overrides)[1]


def checker(path: str | os.PathLike, *, network: str | None = None):
    """`check` for many overrides of one file, which is read and resolved once (a sweep):
    returns a function of the overrides giving the checked `Network`."""
    program = load(path)
    check_names(program)  # the same for every variant
    memo: dict = {}  # the variants' block instances, built once each (NOTE [Elaboration memo])

    def check_with(**overrides) -> Network:
        values = {k: _python_value(v, k) for k, v in overrides.items()}
        with without_collection():  # a variant makes no cycles; a collection would scan the memo's nodes
            return check_program(program, network, values, Limits(), None, memo, names_checked=True)

    return check_with


def _checked(path, network, source, limits, input_shape, overrides) -> tuple[Program, Network]:
    """`check`, and the program it was checked from (whose `files` are the network's sources)."""
    values = {k: _python_value(v, k) for k, v in overrides.items()}
    if input_shape is not None:
        input_shape = tuple(input_shape)
        if not input_shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape):
            raise OptionError(f"input_shape must be positive integers, e.g. (3, 224, 224), got {input_shape!r}")
    with without_collection():  # a large program's nodes would be scanned again at each collection
        program = load(path, source)
        return program, check_program(program, network, values, limits, input_shape)


def build(path: str | os.PathLike, *, network: str | None = None, **overrides):
    """Check a .net file and return its `torch.nn.Module` (random weights, training mode)."""
    from .emit import build as build_module

    return build_module(check(path, network=network, **overrides))


WEIGHT_BYTES = 4  # a parameter's bytes while the module is built (float32; a --dtype cast comes after)


def weight_bytes(graph: Network) -> int:
    """Bytes the network's parameters take as float32, the dtype it is built in."""
    return graph.params * WEIGHT_BYTES


def check_weight_bytes(graph: Network, max_bytes: int | None) -> None:
    """Raises `ParameterError` (at the network) when building `graph` would allocate more than `max_bytes`
    for its weights (None: `limits.default_max_bytes()`, a share of the memory available now)."""
    default = max_bytes is None
    limit = default_max_bytes() if default else max_bytes
    size = weight_bytes(graph)
    if limit is None or size <= limit:
        return
    whose = f"{int(MEMORY_SHARE * 100)}% of the memory available now" if default else "the limit given"
    raise ParameterError(
        f"{graph.params:,} parameters take {byte_text(size)} ({size:,} bytes) as float32, more than "
        f"{byte_text(limit)} ({whose}); not compiled", graph.root.span,
        "give a larger limit (--max-bytes on the command line, max_bytes= in Python), or make the network smaller")


def compile_file(path: str | os.PathLike, output: str | os.PathLike | None = None, *,
                 network: str | None = None, format: str | None = None, dtype: str | None = None,
                 device: str | None = None, optimize: bool = False, max_bytes: int | None = None,
                 state_dict=None, **overrides) -> tuple[Network, Path]:
    """Check a .net file and save it atomically as `format`: "torchscript" (`torch.jit.load`),
    "export" (a `torch.export` program, `torch.export.load`), "aoti" (an AOTInductor package,
    `torch._inductor.aoti_load_package`), "onnx" or "python" (standalone source), to `output`
    (default `<network>.pt`, `.pt2`, `.onnx` or `.py` in the current directory). Without `format`, `output`'s suffix says which (`.pt2`: export), else torchscript.
    Returns the checked network and the path written.

    `dtype` ("float32", "float16", "bfloat16") applies to the tensor formats (onnx: not
    bfloat16), `device` to torchscript and export. `optimize` prepares the model for inference:
    BatchNorm folded into convolutions and eval mode; for torchscript also channels-last weights
    and a frozen graph (`netdsl.optimize`; `netdsl.load` loads it with oneDNN's prepacked
    convolutions where they pay off). `state_dict` (e.g. torchvision's, whose keys a mirrored
    network shares) is loaded strictly into the built model before anything else. Options that do not go together raise `OptionError`;
    an output that is not a regular file, or is one of the network's own sources, `OutputError`.
    A tensor format first refuses (`ParameterError`) a network whose float32 weights are more than
    `max_bytes` (default: half the memory available now; see `check_weight_bytes`)."""
    from .emit import (FORMATS, build as build_module, save_aoti, save_export, save_onnx, save_python,
                       save_torchscript)

    format = format_for(output, format)
    check_compile_options(format, dtype, device, optimize)
    program, graph = _checked(path, network, None, Limits(), None, overrides)
    target = output if output is not None else Path(f"{graph.name}{FORMATS[format]}")
    check_target(target, protect=program.files)  # before the export, which can take minutes
    target = Path(target)
    if format == "python":
        save_python(graph, target)
        return graph, target
    check_weight_bytes(graph, max_bytes)  # before anything is allocated
    import torch

    model = build_module(graph)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    if optimize:
        from .optimize import fold_batchnorm

        fold_batchnorm(model, graph)  # in float32, before any cast
    torch_dtype = getattr(torch, dtype) if dtype else None
    model.to(device=device, dtype=torch_dtype)
    if format == "export":
        save_export(model, target, graph.input_shape, torch_dtype, device)
    elif format == "aoti":
        save_aoti(model, target, graph.input_shape, torch_dtype, device)
    elif format == "onnx":
        size = graph.params * (torch_dtype or torch.float32).itemsize
        if size >= 2**31:
            raise OptionError.naming(f"{graph.params:,} parameters need {size / 2**30:.1f} GiB, over the 2 GiB "
                                     "an ONNX file can hold; use {format=export} or {dtype=float16}")
        save_onnx(model, target, graph.input_shape, torch_dtype)
    else:
        if optimize:  # NOTE: [Channels-last] in netdsl/optimize.py
            model.to(memory_format=torch.channels_last)
        save_torchscript(model, target, freeze=optimize)
    return graph, target


def format_for(output: str | os.PathLike | None, format: str | None) -> str:
    """The output format: `format`, else the one `output`'s suffix names (`.pt2` → export), else
    torchscript; an `output` whose suffix names another format than `format` is an `OptionError`."""
    from .emit import FORMATS

    suffix = Path(output).suffix.lower() if output is not None else ""
    implied = next((name for name, known in FORMATS.items() if known == suffix), None)  # .pt2: export, or aoti
    if format is None:
        if output is not None and implied is None:
            by_suffix = {}
            for name, known in FORMATS.items():
                by_suffix.setdefault(known, name)  # a .pt2 means export unless {format} says aoti
            suffixes = ", ".join(f"{known} for {name}" for known, name in by_suffix.items())
            raise OptionError.naming(f"cannot tell the format of {str(output)!r} from its suffix; give {{format}} "
                                     f"or an output ending in {suffixes}")
        return implied or "torchscript"
    if implied is not None and format in FORMATS and FORMATS[format] != suffix:
        raise OptionError.naming(f"{str(output)!r} is a {suffix} file, which means {{format={implied}}}, but "
                                 f"{{format={format}}} was asked for; change one of them")
    return format


def check_compile_options(format: str, dtype: str | None, device: str | None, optimize: bool) -> None:
    """Raise `OptionError` for options that do not go together or a missing exporter (imports no torch)."""
    from .emit import FORMATS

    if format not in FORMATS:
        raise OptionError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if format == "python" and (dtype or device):
        raise OptionError.naming("{dtype} and {device} apply to the torchscript and export formats "
                                 "({dtype} to onnx too)")
    if format == "python" and optimize:
        raise OptionError.naming("{optimize} applies to the torchscript, export and onnx formats")
    if format == "onnx" and device:
        raise OptionError.naming("{device} does not apply to onnx: an ONNX file runs on the device its runtime "
                                 "picks (e.g. onnxruntime's CUDAExecutionProvider)")
    if format == "onnx" and dtype == "bfloat16":
        raise OptionError.naming("ONNX convolutions have no bfloat16 type; use {dtype=float16} or float32")
    if format == "onnx":
        import importlib.util

        if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript")):
            raise OptionError.naming("{format=onnx} needs the onnx exporter: pip install onnx onnxscript")
    if format == "aoti" and not _cxx():
        raise OptionError.naming("{format=aoti} compiles C++: it needs a C++ compiler (g++ or clang++ on the PATH, "
                                 "or CXX naming one), e.g. apt-get install g++")


def _cxx() -> str | None:
    """The C++ compiler AOTInductor would run: $CXX, else g++, c++ or clang++ on the PATH."""
    import shutil

    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next(filter(None, (shutil.which(name) for name in names)), None)


compile = compile_file  # its first name, kept for the callers that use it

__all__ = ["check", "build", "compile_file", "compile", "training", "parse_override", "parse_input_shape",
           "parse_capacity", "parse_count", "NetDSLError", "OptionError"]
