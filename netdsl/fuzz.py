"""Fuzzing: random valid networks checked against PyTorch, and mutated sources checked for crashes.

Two campaigns, both reproducible from a seed:
- differential: `generate` writes a random *valid* network (convs and transposed convs with random
  kernel, stride, padding, dilation and groups, upsampling, pools, normalization, activations,
  channel shuffles, residuals with and without projections, inception branches, dense layers,
  squeeze-excitation gates, repetitions and parameterized blocks, splits whose widths come from
  list comprehensions, channels-last MLPs (permute, layernorm, per-position linear, width from a
  dict comprehension), learned `param` scales and shifts, channel slices of named tensors, reshapes, random
  input sizes, flat layers between the classifier's linears); the checker's per-layer output shapes, parameter
  count and output shape must equal what the emitted module does when run.
- robustness: `mutate` damages a real .net file (deleted, duplicated and swapped tokens and
  lines, truncation, random bytes, huge numbers, deep nesting, names that are Python builtins or
  `nn.Module` members, values of a million shared lists, CR and CR LF line endings and a byte-order
  mark, huge input sizes), and random byte strings are fed in too; `odd_path` makes files that are
  not regular .net sources (FIFOs, directories, links to devices and to other files, oversized
  files, `std/` paths leading out) and checks them as the main file or an import. Every outcome
  must be success or a `NetDSLError` with a location — any other exception, or a hang, is a bug.

    python -m netdsl.fuzz --cases 100000 --seed 1 --report docs/fuzz-results.md
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .api import check
from .errors import NetDSLError
from .layers import REGISTRY, transposed_out, window_out

ROOT = Path(__file__).resolve().parent.parent
UPSAMPLED = 1024  # height * width an upsampling layer may grow a map to (keeps cases fast)


# ---- the generator of valid networks -------------------------------------------------------

class _Writer:
    """Emits statements while tracking the shape, so every choice it makes is valid."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lines: list[str] = []
        self.labels = 0

    def label(self) -> str:
        if self.rng.random() < 0.5:
            return ""
        self.labels += 1
        if self.rng.random() < 0.2:  # names that are not identifiers, or Python's words, as PyTorch accepts
            return f'"{self.rng.choice(["block", "l-", "class", "getattr", "x:y", "int", "self"])}{self.labels}": '
        return f"l{self.labels}: "

    def emit(self, text: str, depth: int) -> None:
        self.lines.append("  " * depth + text)

    def conv(self, shape, depth, keep_spatial=False, out=None):
        rng = self.rng
        channels, height, width = shape
        for _ in range(20):
            kernel = rng.choice([1, 1, 3, 3, 5, 2])
            dilation = 1 if keep_spatial or kernel == 1 else rng.choice([1, 1, 2])
            stride = 1 if keep_spatial else rng.choice([1, 1, 2, 3])
            pad = dilation * (kernel - 1) // 2 if keep_spatial else rng.randint(0, kernel // 2 + 1)
            if keep_spatial and kernel % 2 == 0:
                continue
            out_channels = out or rng.choice([4, 6, 8, 12, 16])
            groups = rng.choice([g for g in (1, 1, 2, 3, 4) if channels % g == 0 and out_channels % g == 0])
            h = window_out(height, kernel, stride, pad, dilation, False)
            w = window_out(width, kernel, stride, pad, dilation, False)
            if h < 1 or w < 1:
                continue
            args = [str(out_channels), str(kernel)]
            if stride != 1:
                args.append(f"stride={stride}")
            if pad:
                args.append(f"pad={pad}")
            if dilation != 1:
                args.append(f"dilation={dilation}")
            if groups != 1:
                args.append(rng.choice([f"groups={groups}", f"cardinality={groups}"]))
            if rng.random() < 0.3:
                args.append("bias=false")
            self.emit(f"{self.label()}conv({', '.join(args)})", depth)
            return (out_channels, h, w)
        return shape

    def pool(self, shape, depth):
        rng = self.rng
        channels, height, width = shape
        kind = rng.choice(["maxpool", "avgpool"])
        kernel = rng.choice([1, 2, 3])
        stride = rng.choice([1, 2, kernel])
        pad = rng.randint(0, kernel // 2)
        ceil = rng.random() < 0.3
        h, w = (window_out(n, kernel, stride, pad, 1, ceil) for n in (height, width))
        if h < 1 or w < 1:
            return shape
        args = [str(kernel), f"stride={stride}", f"pad={pad}"]
        if ceil:
            args.append("ceil=true")
        if kind == "avgpool" and rng.random() < 0.5:
            args.append("count_include_pad=false")
        self.emit(f"{self.label()}{kind}({', '.join(args)})", depth)
        return (channels, h, w)

    def pointwise(self, shape, depth):
        rng = self.rng
        channels, height, width = shape
        groups = rng.choice([g for g in (1, 2, 3, 4, channels) if channels % g == 0])
        op = rng.choice(["relu", "relu6", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "gelu",
                         "bn", "identity", "dropout(0.1)", "lrn(3)", "mul(0.5)",
                         "mish", "leaky_relu", "leaky_relu(0.2)", "elu", "elu(alpha=0.5)", "hardtanh(-2.0, 2.0)",
                         "prelu", "prelu(per_channel=true)", "layernorm", "layernorm(affine=false)",
                         f"groupnorm({groups})", f"groupnorm({groups}, affine=false)", f"channel_shuffle({groups})"]
                        + (["instancenorm", "instancenorm(affine=true, track_running_stats=true)"]
                           if height * width > 1 else []))
        self.emit(f"{self.label()}{op}", depth)
        return shape

    def flat(self, features, depth):
        """A layer for a flat [features] tensor, between the classifier's linears."""
        rng = self.rng
        groups = rng.choice([g for g in (1, 2, 3, 4) if features % g == 0])
        op = rng.choice(["relu", "bn", "dropout(0.1)", "mish", "leaky_relu(0.1)", "elu", "hardtanh", "prelu",
                         "prelu(per_channel=true)", "layernorm", "layernorm(bias=false)", f"groupnorm({groups})"])
        self.emit(f"{self.label()}{op}", depth)

    def upsampling(self, shape, depth):
        """An upsample or a transposed convolution that leaves at most UPSAMPLED positions."""
        rng = self.rng
        channels, height, width = shape
        if rng.random() < 0.4:
            scale = rng.choice([(2, 2), (2, 2), (3, 3), (1, 2), (2, 1)])
            if height * width * scale[0] * scale[1] > UPSAMPLED:
                return shape
            mode = rng.choice(["nearest", "bilinear"])
            args = [str(scale[0]) if scale[0] == scale[1] else f"[{scale[0]}, {scale[1]}]"]
            if mode != "nearest" or rng.random() < 0.3:
                args.append(f'mode="{mode}"')
            self.emit(f"{self.label()}upsample({', '.join(args)})", depth)
            return (channels, height * scale[0], width * scale[1])
        for _ in range(20):
            kernel = rng.choice([1, 2, 3, 4])
            stride = rng.choice([1, 2, 2, 3])
            dilation = 1 if kernel == 1 else rng.choice([1, 1, 2])
            pad = rng.randint(0, (kernel - 1) * dilation // 2 + 1)
            output_pad = rng.randrange(max(stride, dilation))
            out_channels = rng.choice([4, 6, 8])
            groups = rng.choice([g for g in (1, 1, 2, 3) if channels % g == 0 and out_channels % g == 0])
            h, w = (transposed_out(n, kernel, stride, pad, output_pad, dilation) for n in (height, width))
            if h < 1 or w < 1 or h * w > max(UPSAMPLED, height * width):
                continue
            args = [str(out_channels), str(kernel)]
            for name, value, default in (("stride", stride, 1), ("pad", pad, 0), ("output_pad", output_pad, 0),
                                         ("dilation", dilation, 1), ("groups", groups, 1)):
                if value != default:
                    args.append(f"{name}={value}")
            if rng.random() < 0.3:
                args.append("bias=false")
            self.emit(f"{self.label()}conv_transpose({', '.join(args)})", depth)
            return (out_channels, h, w)
        return shape

    def statement(self, shape, depth, budget):
        rng = self.rng
        roll = rng.random()
        if budget <= 0 or depth > 4 or roll < 0.35:
            kind = rng.random()
            if kind < 0.15:
                return self.upsampling(shape, depth)
            return self.conv(shape, depth) if kind < 0.5 else self.pointwise(shape, depth)
        if roll < 0.45:
            return self.pool(shape, depth)
        if rng.random() < 0.25:
            return self.newer(shape, depth)
        if roll < 0.57:  # residual: identity or a generated projection (labelled: one `downsample` each)
            self.labels += 1
            self.emit(f"r{self.labels}: residual {{", depth)
            inner = shape
            for _ in range(rng.randint(1, 3)):
                inner = self.statement(inner, depth + 1, budget - 1)
            stride_ok = all(
                next((s for s in range(1, a + 1) if (a - 1) // s + 1 == b), None) is not None
                for a, b in zip(shape[1:], inner[1:]))
            if inner != shape and not stride_ok:  # make the body come back to the input's shape
                inner = self.conv(inner, depth + 1, keep_spatial=True, out=shape[0])
                if inner[1:] != shape[1:]:
                    self.emit("adaptive_avgpool([%d, %d])" % shape[1:], depth + 1)
                inner = shape
            self.emit("}", depth)
            return inner
        if roll < 0.67:  # inception: branches that keep height and width
            self.emit("inception {", depth)
            channels = 0
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.5:
                    self.emit(f"{self.label()}{{", depth + 1)
                    inner = self.conv(shape, depth + 2, keep_spatial=True)
                    inner = self.pointwise(inner, depth + 2)
                    self.emit("}", depth + 1)
                else:
                    inner = self.conv(shape, depth + 1, keep_spatial=True)
                channels += inner[0]
            self.emit("}", depth)
            return (channels, shape[1], shape[2])
        if roll < 0.74:
            growth = rng.choice([2, 4])
            self.emit(f"dense {{ bn relu conv({growth}, 3, pad=1, bias=false) }}", depth)
            return (shape[0] + growth, shape[1], shape[2])
        if roll < 0.80:
            squeeze = max(1, shape[0] // 4)
            self.emit(f"gate {{ adaptive_avgpool(1) conv({squeeze}, 1) relu conv({shape[0]}, 1) sigmoid }}", depth)
            return shape
        if roll < 0.88:
            count = rng.randint(0, 3)
            self.emit(f"{self.label()}{{ conv({shape[0]}, 3, pad=1) bn relu }} x {count}", depth)
            return shape
        out = rng.choice([4, 8, 12])
        stride = rng.choice([1, 2])
        self.emit(f"{self.label()}unit({out}, stride={stride})", depth)
        return (out, (shape[1] - 1) // stride + 1, (shape[2] - 1) // stride + 1)


    def newer(self, shape, depth):
        """Splits with widths from a comprehension, a channels-last MLP, learned parameters, channel slices
        and reshapes."""
        rng, (channels, height, width) = self.rng, shape
        self.labels += 1
        n = self.labels
        kind = rng.randrange(5)
        if kind == 4:  # reshapes: the map re-read with height and width swapped, or flattened and restored
            if rng.random() < 0.5:
                self.emit(f"{self.label()}reshape([-1, {width}, {height}])", depth)
                return (channels, width, height)
            self.emit(f"{self.label()}reshape([{channels * height * width}])", depth)
            self.emit(f"{self.label()}reshape([{channels}, -1, {width}])", depth)
            return shape
        parts = [k for k in (2, 3, 4) if channels % k == 0]
        if kind == 0 and parts:  # split: branch i gets a part of the channels; a list comprehension gives widths
            count = rng.choice(parts)
            part = channels // count
            self.emit(f"let widths{n} = [{part} * (i % 2 + 1) for i in range({count}) if i >= 0]", depth)
            self.emit("split {", depth)
            total = 0
            for i in range(count):
                if rng.random() < 0.3:
                    self.emit(f"{self.label()}{{}}", depth + 1)
                    total += part
                else:
                    self.emit(f"{self.label()}conv(widths{n}[{i}], 3, pad=1)", depth + 1)
                    total += part * (i % 2 + 1)
            self.emit("}", depth)
            return (total, height, width)
        if kind == 1:  # a per-position MLP on the channels-last tensor; a dict comprehension gives its width
            out = rng.choice([4, 6, 8])
            norm = "layernorm  " if rng.random() < 0.5 else ""
            self.emit(f"{self.label()}{{ permute([1, 2, 0])  {norm}linear({{k: 2 * k for k in [{out // 2}, 7]}}"
                      f"[{out // 2}])  gelu  permute([2, 0, 1]) }}", depth)
            return (out, height, width)
        if kind == 2:  # a learned scale or shift, per channel or per position
            dims = rng.choice([[channels, 1, 1], [1, height, width], [width]])
            op = rng.choice(["mul", "add"])
            self.emit(f"{self.label()}param({dims}, init={rng.choice([0.5, 1.0, -2.0])}, op=\"{op}\")", depth)
            return shape
        if channels < 2:  # channel slices of a named tensor, as inception branches
            return shape
        cut = rng.randint(1, channels - 1)
        self.emit(f"tap t{n}", depth)
        self.emit(f"inception {{ from t{n}[0:{cut}] -> conv(4, 1)  from t{n}[{cut}:] -> relu }}", depth)
        return (4 + channels - cut, height, width)


BLOCK = """block unit(out, stride=1) {
  let mid = max(1, in.channels // 2)
  residual {
    conv1: conv(mid, 1, bias=false)
    bn1: bn
    relu: relu
    conv2: conv(out, 3, stride=stride, pad=1, bias=false)
    bn2: bn
  }
  relu: relu
}
"""


def generate(rng: random.Random) -> str:
    """A random valid network as .net source."""
    writer = _Writer(rng)
    shape = (rng.randint(1, 6), rng.randint(6, 32), rng.randint(6, 32))
    writer.emit(f"input [{shape[0]}, {shape[1]}, {shape[2]}]", 1)
    for _ in range(rng.randint(1, 7)):
        shape = writer.statement(shape, 1, budget=3)
    if rng.random() < 0.7:
        if rng.random() < 0.5:
            writer.emit("adaptive_avgpool(1)", 1)
        writer.emit("flatten", 1)
        for _ in range(rng.randint(1, 2)):
            features = rng.randint(1, 12)
            writer.emit(f"{writer.label()}linear({features})", 1)
            if rng.random() < 0.3:
                writer.flat(features, 1)
    return BLOCK + "network fuzzed {\n" + "\n".join(writer.lines) + "\n}\n"


def differential(source: str, path: str = "fuzzed.net") -> list[str]:
    """Mismatches between the checker and the emitted module run on a random input: parameters,
    every layer's output shape (forward hooks on the source emitted with a module per layer), and
    the output of the usual source (unlabelled parameter-free layers as calls) against it."""
    import torch

    from .emit import build, python_source

    graph = check(path, source=source)
    model = build(graph).eval()
    hooked = build(graph, python_source(graph, functional=False)).eval()
    problems = []
    params = sum(p.numel() for p in model.parameters())
    if params != graph.params:
        problems.append(f"parameters: checker {graph.params}, torch {params}")
    hooked.load_state_dict(model.state_dict())
    seen: dict[str, tuple] = {}
    modules = dict(hooked.named_modules())
    hooks = []
    parameters = dict(model.named_parameters())
    for layer_path, layer in graph.layers():
        if REGISTRY[layer.op].parameter:  # a learned tensor, not a module: its shape is checked instead
            if layer_path not in parameters or tuple(parameters[layer_path].shape) != tuple(layer.args["shape"]):
                problems.append(f"{layer_path}: no parameter of shape {list(layer.args['shape'])} in the emitted model")
            continue
        module = modules.get(layer_path)
        if module is None:
            problems.append(f"{layer_path}: no such module in the emitted model")
            continue
        def record(module, inputs, output, key=layer_path) -> None:  # must return None
            seen.setdefault(key, tuple(output.shape[1:]))

        hooks.append(module.register_forward_hook(record))
    x = torch.randn(2, *graph.input_shape)
    with torch.no_grad():
        output, reference = model(x), hooked(x)
    for hook in hooks:
        hook.remove()
    for layer_path, layer in graph.layers():
        if layer_path in seen and seen[layer_path] != layer.out_shape:
            problems.append(f"{layer_path} ({layer.op}): checker {list(layer.out_shape)}, torch {list(seen[layer_path])}")
    if tuple(output.shape[1:]) != graph.output_shape:
        problems.append(f"output: checker {list(graph.output_shape)}, torch {list(output.shape[1:])}")
    elif not torch.equal(output, reference):
        problems.append("output: the source with function calls differs from the one with a module per layer")
    return problems


# ---- the mutation fuzzer ------------------------------------------------------------------

_TOKEN = re.compile(r'"[^"\n]*"|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\*\*|//|[=!<>]=|\S')


def mutate(text: str, rng: random.Random) -> str:
    """`text` damaged by one to three random edits."""
    for _ in range(rng.randint(1, 3)):
        tokens = [m for m in _TOKEN.finditer(text)]
        lines = text.split("\n")
        kind = rng.randrange(13)
        if kind == 0 and tokens:  # delete a token
            t = rng.choice(tokens)
            text = text[:t.start()] + text[t.end():]
        elif kind == 1 and tokens:  # duplicate a token
            t = rng.choice(tokens)
            text = text[:t.end()] + " " + t.group() + text[t.end():]
        elif kind == 2 and len(tokens) > 1:  # swap two tokens
            a, b = sorted(rng.sample(tokens, 2), key=lambda m: m.start())
            text = text[:a.start()] + b.group() + text[a.end():b.start()] + a.group() + text[b.end():]
        elif kind == 3:  # delete, duplicate or swap lines
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            op = rng.randrange(3)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == 4:  # truncate
            text = text[:rng.randrange(len(text) + 1)]
        elif kind == 5:  # random bytes (as text)
            at = rng.randrange(len(text) + 1)
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))).decode("latin-1")
            text = text[:at] + junk + text[at:]
        elif kind == 6:  # a number made huge, zero or negative
            numbers = [t for t in tokens if t.group()[0].isdigit()]
            if numbers:
                t = rng.choice(numbers)
                value = rng.choice(["0", "-1", "10" * rng.randint(5, 40), "1e308", "99999999999", "0.5",
                                    "9" * rng.choice([80, 4301, 5000])])
                text = text[:t.start()] + value + text[t.end():]
        elif kind == 7:  # deep nesting
            at = rng.randrange(len(text) + 1)
            depth = rng.choice([10, 100, 1000, 5000])
            opener = rng.choice(["(", "[", "{", "residual {", "-"])
            closer = {"(": ")", "[": "]", "{": "}", "residual {": "}", "-": ""}[opener]
            text = text[:at] + opener * depth + "1" + closer * depth + text[at:]
        elif kind == 8 and tokens:  # a token replaced by a keyword or another name
            t = rng.choice(tokens)
            word = rng.choice(["x", "in", "residual", "network", "block", "let", "relu", "conv", "input",
                               "__class__", "forward", "import", "0", "none", "true", "getattr", "int",
                               '"_modules":', '"_apply":', '"T_destination":', '"a.b":', "def", "split"])
            text = text[:t.start()] + word + text[t.end():]
        elif kind == 10:  # a value of shared lists, quoted, compared or passed where a number goes
            inner = rng.choice(["[1] * 1000", "range(1000)", '["a"] * 1000', "[[1] * 1000] * 1000"])
            value = f"[[{inner}] * 1000] * 1000" if rng.random() < 0.5 else f"[{inner}] * 10"
            use = rng.choice(["assert shared", "assert shared == shared2", "conv(shared, 3)",
                              "let n = len(shared)", 'assert false, "{shared}"', "let k = {shared: 1}"])
            at = text.find("input [")
            at = text.find("\n", at) + 1 if at >= 0 else len(text)
            text = (text[:at] + f"  let shared = {value}\n  let shared2 = {value}\n  {use}\n" + text[at:])
        elif kind == 11:  # another editor's line endings, or a byte-order mark
            text = rng.choice(["\ufeff", ""]) + text.replace("\n", rng.choice(["\r\n", "\r", "\n"]))
        elif kind == 12:  # a huge input size, for the checker and the valid-input analysis
            size = rng.choice(["1000000", "2 ** 40", "100000000", "65537", "33000"])
            text = re.sub(r"input \[[^\]\n]*\]", lambda m: rng.choice([f"input [{size}]", f"input [3, {size}, 8]",
                                                                          f"input [1, 1, {size}]"]), text, count=1)
        else:  # a repeat or loop made large
            text = text.replace("x 3", rng.choice(["x 100000", "x -1", "x 1.5"]), 1)
    return text


ODD_KINDS = ("fifo", "directory", "device link", "link to a non-.net file", "oversized", "std escape",
             "link to a .net file")


def odd_path(rng: random.Random, directory: Path, case: int) -> tuple[Path, str]:
    """A main file in `directory` that is, or imports, something that is not a regular .net source
    (one of `ODD_KINDS`, chosen at random), and that kind."""
    import os

    from .limits import SOURCE_BYTES

    kind = rng.choice(ODD_KINDS)
    odd = directory / f"odd{case}.net"
    if kind == "fifo":
        os.mkfifo(odd)
    elif kind == "directory":
        odd.mkdir()
    elif kind == "device link":
        odd.symlink_to(rng.choice(["/dev/zero", "/dev/null", "/dev/urandom"]))
    elif kind == "link to a non-.net file":
        secret = directory / f"secret{case}.txt"
        secret.write_text("a first line that must not be quoted\n")
        odd.symlink_to(secret)
    elif kind == "oversized":
        with open(odd, "wb") as stream:
            stream.truncate(SOURCE_BYTES + rng.choice([1, 10**6]))  # sparse: nothing is written
    elif kind == "link to a .net file":
        real = directory / f"real{case}.net"
        real.write_text("block linked { relu }\n")
        odd.symlink_to(real)
    imported = "std/../../networks/resnet18.net" if kind == "std escape" else odd.name
    main = directory / f"main{case}.net"
    if kind not in ("std escape", "link to a non-.net file") and rng.random() < 0.4:
        return odd, kind  # the odd file itself as the main file (which, named by the user, may be quoted)
    main.write_text(f'import "{imported}"\nnetwork n {{\n  input [3, 8, 8]\n  relu\n}}\n')
    return main, kind


def robust_path(path: Path, kind: str, outcome: Outcome) -> None:
    """Check the file `path`; success only where it is a real .net source, else a located error, in time."""
    try:
        with _deadline(CASE_SECONDS):
            check(path)
        if kind != "link to a .net file" and kind != "std escape":
            outcome.bugs.append(f"{kind}: {path} was read as a .net source\n--- source ---\n")
        else:
            outcome.ok += 1
    except NetDSLError as error:
        text = error.format()
        if error.span is None or "must not be quoted" in text:
            outcome.bugs.append(f"{kind}: {text}\n--- source ---\n")
        else:
            outcome.errors += 1
    except Exception:  # noqa: BLE001
        outcome.bugs.append(f"{kind}: {traceback.format_exc()}--- source ---\n")


ANALYSED = 4  # one valid mutated network in this many also goes through the valid-input analysis
CASE_SECONDS = 60  # far beyond any honest case (the slowest take a few seconds): a hang


class Hang(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raises `Hang` in the main thread when the block runs longer than `seconds` (POSIX)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    ok: int = 0
    errors: int = 0
    bugs: list[str] = field(default_factory=list)


def robust(source: str, path: str, outcome: Outcome) -> None:
    """Check `source`; anything but success or a located `NetDSLError` is recorded as a bug."""
    from .emit import python_source
    from .sizes import valid_inputs

    try:
        with _deadline(CASE_SECONDS):
            graph = check(path, source=source)
            compile(python_source(graph), "<fuzz>", "exec")  # the emitter must handle what checks
            if outcome.ok % ANALYSED == 0:
                valid_inputs(graph).describe()  # and the valid-input analysis, bounded whatever the sizes
        outcome.ok += 1
    except NetDSLError as error:
        if error.span is None or error.span.line < 1 or error.span.column < 1:
            outcome.bugs.append(f"error without a location: {error.message!r}\n--- source ---\n{source[:2000]}")
        else:
            error.format()  # formatting must not fail either
            outcome.errors += 1
    except Exception:  # noqa: BLE001 - exactly what the fuzzer looks for
        outcome.bugs.append(f"{traceback.format_exc()}--- source ---\n{source[:2000]}")


def seeds() -> list[Path]:
    files = sorted((ROOT / "networks").glob("*.net")) if (ROOT / "networks").is_dir() else []
    return files + sorted((Path(__file__).resolve().parent / "std").glob("*.net"))


DIFFERENTIAL_SHARE = 0.2  # of the cases, by default: generated networks run through PyTorch


def _share_option(share: float) -> str:
    """The command-line option that gives `share`, if it is not the default."""
    return "" if share == DIFFERENTIAL_SHARE else f" --differential-share {share}"


def run(cases: int, seed: int, differential_share: float = DIFFERENTIAL_SHARE, bytes_share: float = 0.1,
        verbose: bool = False, path_share: float = 0.01) -> dict:
    """Runs `cases` cases; returns counts and the bugs found."""
    import tempfile

    rng = random.Random(seed)
    files = seeds()
    texts = {path: path.read_text(encoding="utf-8") for path in files}
    mutated, diff, odd = Outcome(), Outcome(), Outcome()
    diff_cases = mutation_cases = byte_cases = path_cases = 0
    start = time.time()
    scratch = tempfile.TemporaryDirectory(prefix="netdsl-fuzz-")
    for case in range(cases):
        roll = rng.random()
        if roll < path_share:
            path_cases += 1
            robust_path(*odd_path(rng, Path(scratch.name), case), odd)
        elif roll < path_share + differential_share:
            diff_cases += 1
            source = generate(rng)
            try:
                with _deadline(CASE_SECONDS):
                    problems = differential(source)
            except Exception:  # noqa: BLE001
                problems = [traceback.format_exc()]
            if problems:
                diff.bugs.append("\n".join(problems) + f"\n--- source ---\n{source}")
            else:
                diff.ok += 1
        elif roll < path_share + differential_share + bytes_share:
            byte_cases += 1
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))).decode("utf-8", "replace")
            robust(junk, str(ROOT / "networks" / "fuzz_bytes.net"), mutated)
        else:
            mutation_cases += 1
            path = rng.choice(files)
            robust(mutate(texts[path], rng), str(path), mutated)
        if verbose and (case + 1) % 1000 == 0:
            print(f"{case + 1} cases, {len(diff.bugs) + len(mutated.bugs) + len(odd.bugs)} bugs, "
                  f"{time.time() - start:.0f}s", file=sys.stderr)
    scratch.cleanup()
    return {
        "cases": cases, "seed": seed, "differential_share": differential_share, "seconds": round(time.time() - start, 1),
        "differential": {"cases": diff_cases, "agreed": diff.ok, "bugs": diff.bugs},
        "mutation": {"cases": mutation_cases + byte_cases, "random_bytes": byte_cases, "checked_ok": mutated.ok,
                     "located_errors": mutated.errors, "bugs": mutated.bugs},
        "paths": {"cases": path_cases, "checked_ok": odd.ok, "located_errors": odd.errors, "bugs": odd.bugs},
    }


def _worker(job: tuple) -> dict:
    import torch

    torch.set_num_threads(1)  # one process per core: threads inside would only contend
    cases, seed, share, verbose = job
    return run(cases, seed, share, verbose=verbose)


def run_parallel(cases: int, seed: int, jobs: int, differential_share: float = DIFFERENTIAL_SHARE, verbose: bool = False) -> dict:
    """`run` split over `jobs` processes (seeds seed*1000+k); results merged."""
    import multiprocessing

    shares = [cases // jobs + (1 if k < cases % jobs else 0) for k in range(jobs)]
    work = [(n, seed * 1000 + k, differential_share, verbose and k == 0) for k, n in enumerate(shares)]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        parts = pool.map(_worker, work)
    merged = {"cases": cases, "seed": seed, "jobs": jobs, "differential_share": differential_share,
              "seconds": max(p["seconds"] for p in parts),
              "differential": {"cases": 0, "agreed": 0, "bugs": []},
              "mutation": {"cases": 0, "random_bytes": 0, "checked_ok": 0, "located_errors": 0, "bugs": []},
              "paths": {"cases": 0, "checked_ok": 0, "located_errors": 0, "bugs": []}}
    for part in parts:
        for campaign in ("differential", "mutation", "paths"):
            for key, value in part[campaign].items():
                merged[campaign][key] += value
    return merged


def report_markdown(result: dict) -> str:
    import platform

    d, m, o = result["differential"], result["mutation"], result["paths"]
    lines = [
        "# Fuzzing results",
        "",
        f"Command: `python -m netdsl.fuzz --cases {result['cases']} --seed {result['seed']}"
        f"{' --jobs ' + str(result['jobs']) if result.get('jobs', 1) > 1 else ''}"
        f"{_share_option(result.get('differential_share', DIFFERENTIAL_SHARE))}` "
        f"({result['seconds']} s on {platform.machine()}, Python {platform.python_version()}).",
        "",
        "| campaign | cases | passed | bugs |",
        "|---|---:|---:|---:|",
        f"| differential (checker vs emitted PyTorch module) | {d['cases']} | {d['agreed']} | {len(d['bugs'])} |",
        f"| mutations of networks/ and std/ + random bytes ({m['random_bytes']}) | {m['cases']} | "
        f"{m['checked_ok'] + m['located_errors']} ({m['checked_ok']} valid, {m['located_errors']} located errors) "
        f"| {len(m['bugs'])} |",
        f"| files that are not regular .net sources, as main file or import ({', '.join(ODD_KINDS)}) | "
        f"{o['cases']} | {o['checked_ok'] + o['located_errors']} ({o['checked_ok']} valid links, "
        f"{o['located_errors']} located refusals) | {len(o['bugs'])} |",
        "",
    ]
    for title, bugs in (("Differential", d["bugs"]), ("Mutation", m["bugs"]), ("Path", o["bugs"])):
        for bug in bugs[:20]:
            problem, _, source = bug.partition("--- source ---")
            problem_lines = problem.strip().splitlines()
            shown = problem_lines if len(problem_lines) <= 16 else ["..."] + problem_lines[-15:]
            lines += [f"## {title} bug", "", "```", *shown, "--- source (first 40 lines) ---",
                      *source.strip().splitlines()[:40], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdsl.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--differential-share", type=float, default=DIFFERENTIAL_SHARE,
                        help="fraction of cases that are generated networks run through PyTorch")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--report", help="write a Markdown summary here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.jobs > 1:
        result = run_parallel(args.cases, args.seed, args.jobs, args.differential_share, verbose=not args.quiet)
    else:
        result = run(args.cases, args.seed, args.differential_share, verbose=not args.quiet)
    text = report_markdown(result)
    if args.report:
        Path(args.report).write_text(text, encoding="utf-8")
    print(text)
    bugs = sum(len(result[campaign]["bugs"]) for campaign in ("differential", "mutation", "paths"))
    return 1 if bugs else 0


if __name__ == "__main__":
    raise SystemExit(main())
