"""`netdsl sweep`: a .net file and ranges of its parameters → every variant checked and costed.

Each combination of the `-D name=start:stop:step` or `-D name=a,b,c` values is checked (no torch)
and read off the cost model: parameters, inference MACs, a training step's peak memory at a batch
size, the largest batch that fits a memory size, and with a device profile the latency lower bound
of an inference forward pass at that batch (`netdsl.roofline`). Variants over a `--max-params`,
`--max-macs` or `--fit` limit are marked; among the others, the Pareto front is marked (NOTE:
[Pareto front]).
`plot` draws the table with matplotlib (imported only there).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from fractions import Fraction

from .api import checker, parse_override
from .cost import Precision, training as training_step
from .devices import Profile
from .roofline import total as bound_total
from .errors import NetDSLError, OptionError

# NOTE: [Pareto front]
# Without a measure of accuracy, a variant's parameters stand for its capacity and its MACs and
# training memory for its cost: a variant is on the front when no other within the limits has at
# least as many parameters for no more MACs and no more memory (and is better in one of the three).
# Variants that only scale one knob all lie on it; a front thins out where knobs trade off (depth
# against width at equal parameters).


@dataclass(frozen=True)
class Axis:
    """One swept parameter: its name and its values, each as netdsl source text."""

    name: str
    values: tuple[str, ...]


def _split_top_level(text: str) -> list[str]:
    """`a,[1, 2],"x,y"` → `a`, `[1, 2]`, `"x,y"`: commas outside brackets and strings."""
    parts, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    return parts + [current.strip()]


def _number(text: str) -> Fraction:
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise OptionError(f"expected a number, got {text.strip()!r}") from None


def _spelled(value: Fraction, integers: bool) -> str:
    return str(int(value)) if integers else repr(float(value))


MAX_VALUES = 10_000  # values of one axis; a sweep of more is a typo (a step of 0.0001)


def parse_axis(text: str) -> Axis:
    """`width=0.5:2.0:0.25` (start, stop included, step), `depth=18,34,50`, or one value."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier() or not spec.strip():
        raise OptionError(f"expected NAME=VALUES (0.5:2.0:0.25 or 18,34,50), got {text!r}")
    values = _split_top_level(spec)
    if len(values) == 1 and values[0].count(":") == 2 and not values[0].startswith(("[", "\"", "'")):
        start, stop, step = (_number(part) for part in values[0].split(":"))
        if step <= 0 or stop < start:
            raise OptionError(f"{name}: a range start:stop:step needs start <= stop and a step above 0, got {spec!r}")
        count = int((stop - start) / step) + 1
        if count > MAX_VALUES:
            raise OptionError(f"{name}: {spec!r} gives {count:,} values, more than {MAX_VALUES:,}")
        integers = all(part.strip().lstrip("+-").isdigit() for part in values[0].split(":"))
        values = [_spelled(start + index * step, integers) for index in range(count)]
    if any(not value for value in values):
        raise OptionError(f"{name}: an empty value in {spec!r}")
    for value in values:  # a value that is not a netdsl expression is the user's to fix, once
        parse_override(f"{name}={value}")
    return Axis(name, tuple(values))


@dataclass
class Variant:
    values: dict[str, str]  # name -> the netdsl source of its value
    params: int | None = None
    macs: int | None = None  # one inference forward pass, per sample
    peak: int | None = None  # bytes of a training step at the sweep's batch
    fit: int | None = None  # the largest batch that fits the sweep's capacity
    bound: float | None = None  # seconds: the latency lower bound of a forward pass at the batch (a profile given)
    error: str | None = None  # why the variant is not a network (the checker's message)
    within: bool = False  # checked, and under every limit
    front: bool = False  # on the Pareto front of the variants within the limits

    def to_json(self) -> dict:
        return {"values": self.values, "params": self.params, "macs": self.macs, "peak_bytes": self.peak,
                "fit_batch": self.fit, "bound_seconds": self.bound, "error": self.error, "within_limits": self.within,
                "pareto": self.front}


@dataclass(frozen=True)
class Limits:
    max_params: int | None = None
    max_macs: int | None = None
    capacity: int | None = None  # bytes the training step's peak at `batch` must fit in


def bound_dtype(precision: Precision) -> str:
    """The dtype a sweep's latency bound is for: autocast's, else float32."""
    return precision.amp or "float32"


def sweep(path: str | os.PathLike, axes: list[Axis], *, network: str | None = None, batch: int = 1,
          optimizer: str = "adam", precision: Precision = Precision(), limits: Limits = Limits(),
          profile: Profile | None = None) -> list[Variant]:
    """Every combination of the axes' values, in order, checked and costed; the front marked. With
    a `profile`, each variant's latency bound at `batch`, in `bound_dtype(precision)`."""
    check = checker(path, network=network)  # the file read once
    costs: dict = {}  # what each block instance does to a training step (NOTE [Training memo])
    bounds: dict = {}  # and to the latency bound (`roofline.total`)
    variants = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        values = dict(zip((axis.name for axis in axes), combination))
        variants.append(_variant(check, values, batch, optimizer, precision, limits, costs, profile, bounds))
    _mark_front([variant for variant in variants if variant.within])
    return variants


def _variant(check, values, batch, optimizer, precision, limits, costs, profile, bounds) -> Variant:
    variant = Variant(values)
    try:
        overrides = dict(parse_override(f"{name}={value}") for name, value in values.items())
        graph = check(**overrides)
    except NetDSLError as error:
        variant.error = error.message.splitlines()[0]
        return variant
    training = training_step(graph, precision, costs)
    variant.params, variant.macs = graph.params, graph.macs
    variant.peak = training.memory(batch, optimizer)["peak"]
    if limits.capacity is not None:
        variant.fit = training.fit(limits.capacity, optimizer)
    if profile is not None:
        variant.bound = bound_total(graph, profile, bound_dtype(precision), batch, bounds).seconds
    variant.within = ((limits.max_params is None or variant.params <= limits.max_params)
                      and (limits.max_macs is None or variant.macs <= limits.max_macs)
                      and (limits.capacity is None or variant.peak <= limits.capacity))
    return variant


def _mark_front(variants: list[Variant]) -> None:
    """NOTE: [Pareto front]: most parameters for the fewest MACs and the least memory."""
    def dominates(a: Variant, b: Variant) -> bool:
        at_least = a.params >= b.params and a.macs <= b.macs and a.peak <= b.peak
        return at_least and (a.params, a.macs, a.peak) != (b.params, b.macs, b.peak)

    for variant in variants:
        variant.front = not any(dominates(other, variant) for other in variants)


LABELLED = 12  # a plot names the front's variants when there are at most this many


AXES = {"macs": ("MACs per sample (inference)", lambda variant: variant.macs),
        "params": ("parameters", lambda variant: variant.params),
        "memory": ("training peak (GiB)", lambda variant: variant.peak / 2**30),
        "bound": ("latency lower bound (ms)", lambda variant: variant.bound * 1e3)}


def plot(variants: list[Variant], path: str | os.PathLike, x: str = "macs", title: str = "",
         y: str = "memory") -> None:
    """A scatter of `x` ("macs" or "params") against `y` ("memory": the training peak, or "bound":
    the latency bound, which the sweep must have been given a profile for), the front marked (and
    labelled when small), written atomically as PNG or SVG (by `path`'s suffix)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import write_atomically

    image_format = os.fspath(path).rsplit(".", 1)[-1].lower()
    (x_label, x_of), (y_label, y_of) = AXES[x], AXES[y]
    checked = [variant for variant in variants if variant.error is None]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for within, colour, label in ((False, "#bbbbbb", "over a limit"), (True, "#4477aa", "within the limits")):
        chosen = [variant for variant in checked if variant.within == within and not variant.front]
        if chosen:
            axes.scatter([x_of(v) for v in chosen], [y_of(v) for v in chosen], s=18, c=colour, label=label)
    front = [variant for variant in checked if variant.front]
    if front:  # a front in three measures: points, not a curve in these two
        axes.scatter([x_of(v) for v in front], [y_of(v) for v in front], s=26, c="#cc3311",
                     label="Pareto front (parameters, MACs, memory)")
    if len(front) <= LABELLED:
        for variant in front:
            axes.annotate(", ".join(f"{name}={value}" for name, value in variant.values.items()),
                          (x_of(variant), y_of(variant)), fontsize=6, xytext=(4, 4), textcoords="offset points")
    axes.set_xscale("log")
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: minor labels collide
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, format=image_format))
    plt.close(figure)
