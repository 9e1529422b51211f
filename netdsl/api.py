"""The Python API: file → checked `Network` → `nn.Module` / TorchScript file.

`check` never imports torch; `build` and `compile` do, lazily.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import ast
from .check import Limits, check_program
from .errors import NetDSLError, Span, TypeError_, remember_source
from .graph import Network
from .parse import parse_expr
from .resolve import load


class OptionError(ValueError):
    """Options that do not go together (a usage error at the command line)."""


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
    return name, parse_expr(value.strip(), Span(where, 1, 1, 1, len(value.strip()) + 1))


def check(path: str | os.PathLike, *, network: str | None = None, source: str | None = None,
          limits: Limits = Limits(), **overrides) -> Network:
    """Parse, resolve and check a .net file; returns the annotated graph (raises `NetDSLError`)."""
    values = {k: _python_value(v, k) for k, v in overrides.items()}
    return check_program(load(path, source), network, values, limits)


def build(path: str | os.PathLike, *, network: str | None = None, **overrides):
    """Check a .net file and return its `torch.nn.Module` (random weights, training mode)."""
    from .emit import build as build_module

    return build_module(check(path, network=network, **overrides))


def compile(path: str | os.PathLike, output: str | os.PathLike | None = None, *,
            network: str | None = None, format: str = "torchscript", dtype: str | None = None,
            device: str | None = None, **overrides) -> tuple[Network, Path]:
    """Check a .net file and save it atomically as `format`: "torchscript" (`torch.jit.load`),
    "export" (a `torch.export` program, `torch.export.load`) or "python" (standalone source).
    `dtype` ("float32", "float16", "bfloat16") and `device` apply to the tensor formats."""
    from .emit import FORMATS, build as build_module, save_export, save_python, save_torchscript

    if format not in FORMATS:
        raise OptionError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if format == "python" and (dtype or device):
        raise OptionError("--dtype and --device apply to the torchscript and export formats")
    graph = check(path, network=network, **overrides)
    target = Path(output) if output is not None else Path(f"{graph.name}{FORMATS[format]}")
    if format == "python":
        save_python(graph, target)
        return graph, target
    import torch

    model = build_module(graph)
    torch_dtype = getattr(torch, dtype) if dtype else None
    model.to(device=device, dtype=torch_dtype)
    if format == "export":
        save_export(model, target, graph.input_shape, torch_dtype, device)
    else:
        save_torchscript(model, target)
    return graph, target


__all__ = ["check", "build", "compile", "parse_override", "NetDSLError"]
