"""The layer registry: the single source of truth for every built-in op.

Each op declares, in one `LayerDef`: its parameter schema (with aliases) and how arguments are
bound to it, its shape rule, parameter count (and how many are biases), MAC rule, spatial reach
(for receptive fields), whether it is a weight layer or ends the feature maps, how it is drawn
(a colour family), its torch emission (a constructor name and arguments, and the source of a
helper class where torch.nn has none; this module never imports torch) and what inference
optimizations may do with it. The checker, cost model, emitter, drawer, docs and CLI all read
`REGISTRY`; `register` adds an op.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

from .text import shape_text
from .values import described, is_number, show

Shape = tuple[int, ...]
REQUIRED = object()


class LayerProblem(Exception):
    """Raised by a rule or by argument binding; the checker turns it into a located error of the
    given kind ("shape", "param", "type"), at the argument `param` when one is named."""

    def __init__(self, message: str, kind: str = "shape", hint: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message, self.kind, self.hint, self.param = message, kind, hint, param


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "int" | "float" | "bool" | "str" | "pair" (int or [int, int]) | "dims" (a list of integers)
    default: object = REQUIRED  # a value, REQUIRED, or a callable of the arguments bound so far
    doc: str = ""
    choices: tuple = ()
    minimum: int | None = None  # the smallest value allowed (for pairs: for each element)
    aliases: tuple[str, ...] = ()  # other spellings accepted in calls (`padding` for `pad`)

    @property
    def help(self) -> str:
        """Its meaning and other spellings, as an editor shows it: `zero padding on each side (also spelled padding)`."""
        return self.doc + (f" (also spelled {', '.join(self.aliases)})" if self.aliases else "")


@dataclass(frozen=True)
class Emission:
    """`nn.<cls>(*args, **kwargs)`; with `helper`, a class netdsl writes into the emitted source
    (its source is the op's `LayerDef.helper_source`)."""

    cls: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    helper: bool = False
    module: str | None = None  # the class comes from this importable module (a plugin's), not torch.nn


@dataclass(frozen=True)
class Window:
    """How an output position reads its input along one spatial axis: output i reads the input
    positions i*stride - pad + t*dilation for t < kernel (the receptive-field rule, netdsl/cost.py).
    An upsampling layer's stride, pad and dilation are fractions: it reads the integer positions
    among them (NOTE [Fractional strides] in netdsl/cost.py)."""

    kernel: int = 1
    stride: int | Fraction = 1
    pad: int | Fraction = 0  # may be negative: a crop
    dilation: int | Fraction = 1


GLOBAL = "global"  # a `reach` result: every output reads every input position (linear, global pooling)
# A `reach` result: position-wise, but normalized by statistics of the whole map (group and instance
# normalization), so every input position reaches every output, and the local field goes on as well.
GLOBAL_STATISTICS = "global statistics"


@dataclass(frozen=True)
class Saved:
    """One tensor autograd keeps for an op's backward in training (NOTE: [Saved for backward] in
    netdsl/cost.py). `tensor` is "input" (what the op reads, after autocast's cast; an op running
    in place saves a copy of it, as autograd does), "output", "weight" (its weight as it computes
    with it: a parameter, which only counts where autocast casts it to a copy) or "new" (a tensor
    of its own: `elements` per sample, plus `fixed` whatever the batch)."""

    tensor: str
    elements: int = 0
    fixed: int = 0
    dtype: str = "compute"  # "compute" (the dtype the op computes in), "float32", "int64", "mask"


@dataclass(frozen=True)
class Step:
    """What a `saves` rule may ask besides shapes and arguments."""

    inplace: bool = False  # the op overwrites its input (the emitter's in-place plan)
    input_grad: bool = True  # its input requires grad (False before the first layer with parameters)


SAVES_INPUT = (Saved("input"),)
SAVES_OUTPUT = (Saved("output"),)
SAVES_NOTHING: tuple[Saved, ...] = ()
LOW_PRECISION = (("cpu", "low"), ("cuda", "low"))  # autocast's lower-precision list on both devices

_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "pair": "an integer or a list of two integers", "dims": "a list of integers"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LayerDef:
    name: str
    doc: str
    params: tuple[Param, ...]
    shape: Callable[[Shape, dict], Shape]
    count: Callable[[Shape, dict], int]  # trainable parameters
    macs: Callable[[Shape, Shape, dict], int]
    torch: Callable[[Shape, dict], Emission]
    biases: Callable[[Shape, dict], int] = lambda s, a: 0  # of `count`, the additive terms (bias, BN's shift)
    # Spatial reach: (height, width) windows, GLOBAL, GLOBAL_STATISTICS, or None for a position-wise op.
    reach: Callable[[Shape, dict], "tuple[Window, Window] | str | None"] = lambda s, a: None
    aliases_input: bool = False  # output may share storage with the input (views, identity)
    inplace: bool = False  # accepts inplace=True when its input is not needed elsewhere
    output_mutable: bool = False  # backward never reads the output, so it may be overwritten
    weight: bool = False  # a weight layer: its MACs are the network's, and it counts towards depth
    feature_end: bool = False  # on the main path, its input is the final feature map (flatten, global pooling)
    family: str | None = None  # colour family in diagrams (netdsl/draw.py); None: a colour hashed from the name
    helper_source: str | None = None  # the class the emitted source defines for a `helper` emission
    folds_after: tuple[str, ...] = ()  # ops whose output this one may be folded into (bn into a conv) for inference
    plugin: str | None = None  # the entry point that registered it (None: built in)
    # Which tensors it takes (NOTE [Axes]): "canonical" ones only ([C, H, W] or [features]), "any"
    # (element-wise), or "last" (along the last axis, at every other position, like nn.Linear).
    layout: str = "canonical"
    # The output's axes from the input's (names "C", "H", "W", "F"; an op that reorders or remakes them).
    axes: Callable[[tuple[str, ...], dict], tuple[str, ...]] | None = None
    parameter: bool = False  # its emission is a learned tensor of the enclosing module (`param`), not a module
    # Its output's size along one axis depends on the input's along others (`reshape`): the valid-input
    # analysis, which follows one axis at a time, cannot go through it while the sizes vary.
    couples_axes: bool = False
    # A parameter- and buffer-free op's function (`F.relu`, `torch.flatten`), called with the input and
    # its emission's arguments; netdsl then writes an unlabelled use as a call in `forward`, not a module.
    functional: str | None = None
    # Training (docs/cost.md): what autograd keeps for backward, (in_shape, out_shape, args, Step) ->
    # Saved tensors; the default, the input, is right for an op whose weight gradient needs it.
    saves: Callable[[Shape, Shape, dict, Step], tuple[Saved, ...]] = lambda s, o, a, step: SAVES_INPUT
    # In training its output is its input's storage (a view, or the input itself); None: `aliases_input`.
    view: Callable[[Shape, dict], bool] | None = None
    # Autocast's rule per device: "low" (runs in the low dtype), "float32" (casts its input up), "widen"
    # (reads its input as it is, computes and returns float32); a device not named: follows its input.
    autocast: tuple[tuple[str, str], ...] = ()
    buffers: Callable[[Shape, dict], tuple[tuple[int, str], ...]] = lambda s, a: ()  # (elements, dtype) it keeps
    param_tensors: Callable[[Shape, dict], int] | None = None  # None: a weight, and a bias where it has one
    # In inference it returns its input (dropout, stochastic depth): it computes and moves nothing (the
    # latency bound, netdsl/roofline.py); a view (`is_view`) moves nothing either.
    eval_identity: bool = False

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def autocast_rule(self, device: str) -> str | None:
        return dict(self.autocast).get(device)

    def is_view(self, in_shape: Shape, args: dict) -> bool:
        """In training, its output shares its input's storage (a view, or the input itself)."""
        return self.aliases_input if self.view is None else self.view(in_shape, args)

    def tensors(self, in_shape: Shape, args: dict) -> int:
        """How many parameter tensors it holds (an optimizer keeps a step count per tensor)."""
        if self.param_tensors is not None:
            return self.param_tensors(in_shape, args)
        return (self.count(in_shape, args) > 0) + (self.biases(in_shape, args) > 0)

    def backward_macs(self, in_shape: Shape, out_shape: Shape, args: dict, input_grad: bool) -> tuple[int, int]:
        """(input-gradient, weight-gradient) MACs of its backward: each as many as its forward pass
        (a convolution's input gradient is a transposed convolution of the same size, its weight
        gradient a correlation of input and output gradient); none for an input that needs no gradient."""
        macs = self.macs(in_shape, out_shape, args)
        return (macs if input_grad else 0), (macs if self.count(in_shape, args) > 0 else 0)

    def aliases(self) -> dict[str, str]:
        """{alternative spelling: parameter name}."""
        return self._aliases

    @functools.cached_property
    def _aliases(self) -> dict[str, str]:
        return {alias: p.name for p in self.params for alias in p.aliases}

    @functools.cached_property
    def param_names(self) -> list[str]:
        """Its parameters' names, in order."""
        return [p.name for p in self.params]

    def bind(self, given: dict[str, object] | None = None, **keywords) -> dict:
        """Every argument of a call: the `given` values (by parameter name) checked and coerced,
        the rest from the defaults. Raises `LayerProblem` naming the argument at fault."""
        given = {**(given or {}), **keywords}
        bound: dict[str, object] = {}
        for param in self.params:
            if param.name in given:
                bound[param.name] = self.coerce(param, given[param.name])
            elif param.default is REQUIRED:
                required = ", ".join(p.name for p in self.params if p.default is REQUIRED)
                raise LayerProblem(f"{self.name} is missing its '{param.name}' argument"
                                   f"{' (' + param.doc + ')' if param.doc else ''}", "type",
                                   f"{self.name}({required}, ...)")
            else:
                bound[param.name] = param.default(bound) if callable(param.default) else param.default
        unknown = set(given) - set(bound)
        if unknown:
            raise LayerProblem(f"{self.name} has no parameter '{sorted(unknown)[0]}'", "type")
        return bound

    def coerce(self, param: Param, value):
        """`value` as `param` takes it (a pair of equal numbers becomes one), or a LayerProblem."""
        def fail():
            hint = ("use // for integer division, or floor()/round()"
                    if isinstance(value, float) and param.kind in ("int", "pair") else None)
            return LayerProblem(f"{self.name}: '{param.name}' expects {_EXPECTED[param.kind]}, got "
                                f"{described(value)}", "type", hint, param.name)

        if param.default is None and value is None:
            return None
        if param.kind == "int":
            if not _is_int(value):
                raise fail()
        elif param.kind == "float":
            if not is_number(value) or not math.isfinite(value):
                raise fail()
            value = float(value)
        elif param.kind == "bool":
            if not isinstance(value, bool):
                raise fail()
        elif param.kind == "str":
            if not isinstance(value, str):
                raise fail()
            if param.choices and value not in param.choices:
                raise LayerProblem(f"{self.name}: '{param.name}' must be one of "
                                   f"{', '.join(map(show, param.choices))}, got {show(value)}", "param",
                                   param=param.name)
        elif param.kind == "dims":
            if not isinstance(value, tuple) or not value or not all(_is_int(v) for v in value):
                raise fail()
        elif param.kind == "pair":
            if isinstance(value, tuple):
                if len(value) != 2 or not all(_is_int(v) for v in value):
                    raise fail()
                value = value[0] if value[0] == value[1] else value
            elif not _is_int(value):
                raise fail()
        if param.minimum is not None and value is not None:
            if min(value if isinstance(value, tuple) else (value,)) < param.minimum:
                raise LayerProblem(f"{self.name}: '{param.name}' must be at least {param.minimum}, "
                                   f"got {show(value)}", "param", param=param.name)
        return value


REGISTRY: dict[str, LayerDef] = {}


def register(layer: LayerDef) -> LayerDef:
    REGISTRY[layer.name] = layer
    return layer


def register_op(layer: LayerDef) -> LayerDef:
    """Adds a user-defined op (see docs/extending.md): checked, costed, drawn, listed and emitted
    like a built-in. Its name must be new and a plain name; its emission names an importable module
    (`Emission(cls, ..., module="package.modules")`) or a torch.nn class."""
    import keyword

    if not isinstance(layer, LayerDef):
        raise TypeError(f"register_op takes a netdsl.layers.LayerDef, got {type(layer).__name__}")
    if not layer.name.isidentifier() or keyword.iskeyword(layer.name):
        raise ValueError(f"an op's name must be a plain name, got {layer.name!r}")
    existing = REGISTRY.get(layer.name)
    if existing is not None and existing != layer:
        raise ValueError(f"an op named '{layer.name}' is already registered"
                         + (f" (by {existing.plugin})" if existing.plugin else " (built in)"))
    return register(layer)


PLUGIN_GROUP = "netdsl.ops"  # entry points of installed packages: a LayerDef, a list of them, or a function giving them
PLUGIN_ERRORS: list[str] = []  # plugins that failed to load, for `netdsl layers` to say


def load_plugins() -> list[str]:
    """Registers the ops of every installed package's `netdsl.ops` entry points; returns their names.
    Only installed packages are read: a .net file never makes Python code run."""
    from dataclasses import replace
    from importlib.metadata import entry_points

    loaded = []
    for point in entry_points(group=PLUGIN_GROUP):
        try:
            found = point.load()
            if callable(found) and not isinstance(found, LayerDef):
                found = found()
            for layer in [found] if isinstance(found, LayerDef) else list(found):
                loaded.append(register_op(replace(layer, plugin=f"{point.value} ({point.dist.name if point.dist else '?'})")).name)
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break netdsl
            PLUGIN_ERRORS.append(f"{PLUGIN_GROUP} entry point '{point.name}' ({point.value}): "
                                 f"{type(error).__name__}: {error}")
    return loaded


def _zero(*_):
    return 0


# ---- shape helpers ------------------------------------------------------------------------

def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _spatial(in_shape: Shape, op: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise LayerProblem(
            f"{op} expects a [channels, height, width] input, got {shape_text(in_shape)}",
            hint="spatial layers must come before 'flatten'" if len(in_shape) == 1 else None,
        )
    return in_shape  # type: ignore[return-value]


def window_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    """PyTorch's output length for a convolution or pooling window along one axis."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1  # negative when the window overhangs the input
    out = (-(-span // stride) if ceil else span // stride) + 1  # rounding like ATen's div_rtn, also below 0
    if ceil and (out - 1) * stride >= size + pad:  # the last window must start inside the input
        out -= 1
    return max(out, 0)


def _window(in_shape: Shape, args: dict, op: str, ceil: bool = False) -> Shape:
    channels, height, width = _spatial(in_shape, op)
    kernel, stride, pad = _pair(args["kernel"]), _pair(args["stride"]), _pair(args["pad"])
    dilation = _pair(args.get("dilation", 1))
    out = []
    for axis, size in enumerate((height, width)):
        length = window_out(size, kernel[axis], stride[axis], pad[axis], dilation[axis], ceil)
        if length <= 0:
            raise LayerProblem(
                f"{op} output would be empty: input {shape_text(in_shape)}, kernel {kernel[axis]}, "
                f"stride {stride[axis]}, pad {pad[axis]} leave {length} along "
                f"{'height' if axis == 0 else 'width'}",
                hint="use a larger input, a smaller kernel or more padding",
            )
        out.append(length)
    return (channels, out[0], out[1])


# ---- convolution ----------------------------------------------------------------------------

def _check_groups(op: str, channels: int, out: int, groups: int) -> None:
    if channels % groups:
        raise LayerProblem(f"{op} input channels {channels} are not divisible by groups={groups}",
                           kind="param", param="groups")
    if out % groups:
        raise LayerProblem(f"{op} output channels {out} are not divisible by groups={groups}",
                           kind="param", param="groups")


def _conv_shape(in_shape: Shape, args: dict) -> Shape:
    channels = _spatial(in_shape, "conv")[0]
    _check_groups("conv", channels, args["out"], args["groups"])
    _, height, width = _window(in_shape, args, "conv")
    return (args["out"], height, width)


def _conv_weights(in_shape: Shape, args: dict) -> int:
    kh, kw = _pair(args["kernel"])
    return args["out"] * (in_shape[0] // args["groups"]) * kh * kw


def _windows(args: dict) -> tuple[Window, Window]:
    """The (height, width) windows of a convolution or pooling layer's arguments."""
    kernel, stride, pad = _pair(args["kernel"]), _pair(args["stride"]), _pair(args["pad"])
    dilation = _pair(args.get("dilation", 1))
    return tuple(Window(kernel[axis], stride[axis], pad[axis], dilation[axis]) for axis in (0, 1))


def _conv_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = {"kernel_size": args["kernel"]}
    for name, torch_name, default in (("stride", "stride", 1), ("pad", "padding", 0),
                                       ("dilation", "dilation", 1), ("groups", "groups", 1)):
        if args[name] != default:
            kwargs[torch_name] = args[name]
    if not args["bias"]:
        kwargs["bias"] = False
    return Emission("Conv2d", (in_shape[0], args["out"]), kwargs)


register(LayerDef(
    name="conv",
    doc="2-D convolution (groups=in_channels gives a depthwise convolution).",
    params=(
        Param("out", "int", doc="output channels", minimum=1),
        Param("kernel", "pair", doc="kernel size", minimum=1),
        Param("stride", "pair", 1, minimum=1),
        Param("pad", "pair", 0, doc="zero padding on each side", minimum=0, aliases=("padding",)),
        Param("dilation", "pair", 1, minimum=1),
        Param("groups", "int", 1, doc="grouped convolution", minimum=1, aliases=("cardinality",)),
        Param("bias", "bool", True),
    ),
    shape=_conv_shape,
    count=lambda s, a: _conv_weights(s, a) + (a["out"] if a["bias"] else 0),
    macs=lambda s, o, a: _conv_weights(s, a) * o[1] * o[2],
    torch=_conv_torch,
    biases=lambda s, a: a["out"] if a["bias"] else 0,
    reach=lambda s, a: _windows(a),
    saves=lambda s, o, a, step: _SAVES_INPUT_AND_WEIGHT, autocast=LOW_PRECISION,
    output_mutable=True, weight=True, family="conv",
))


_SAVES_INPUT_AND_WEIGHT = (Saved("input"), Saved("weight"))


def transposed_out(size: int, kernel: int, stride: int, pad: int, output_pad: int, dilation: int) -> int:
    """PyTorch's output length for a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_pad + 1


def _conv_transpose_shape(in_shape: Shape, args: dict) -> Shape:
    channels, height, width = _spatial(in_shape, "conv_transpose")
    _check_groups("conv_transpose", channels, args["out"], args["groups"])
    kernel, stride, pad, output_pad, dilation = (
        _pair(args[name]) for name in ("kernel", "stride", "pad", "output_pad", "dilation"))
    out = []
    for axis, size in enumerate((height, width)):
        along = "height" if axis == 0 else "width"
        if output_pad[axis] >= stride[axis] and output_pad[axis] >= dilation[axis]:
            raise LayerProblem(
                f"conv_transpose output_pad {output_pad[axis]} must be smaller than its stride {stride[axis]} "
                f"or its dilation {dilation[axis]} (along {along})", kind="param", param="output_pad")
        length = transposed_out(size, kernel[axis], stride[axis], pad[axis], output_pad[axis], dilation[axis])
        if length <= 0:
            raise LayerProblem(
                f"conv_transpose output would be empty: input {shape_text(in_shape)}, kernel {kernel[axis]}, "
                f"stride {stride[axis]}, pad {pad[axis]} leave {length} along {along}",
                hint="use less padding or a larger kernel")
        out.append(length)
    return (args["out"], out[0], out[1])


def _conv_transpose_weights(in_shape: Shape, args: dict) -> int:
    kh, kw = _pair(args["kernel"])
    return in_shape[0] * (args["out"] // args["groups"]) * kh * kw  # weight [in, out / groups, kh, kw]


def _ratio(numerator: int, denominator: int) -> int | Fraction:
    return numerator // denominator if numerator % denominator == 0 else Fraction(numerator, denominator)


def _upsampling_window(kernel: int, stride: int, pad: int, dilation: int) -> Window:
    """A transposed convolution's output i reads the inputs j with i = j*stride - pad + t*dilation
    (t < kernel): j from (i + pad - (kernel-1)*dilation) / stride to (i + pad) / stride, a window of
    stride 1/stride (NOTE [Fractional strides] in netdsl/cost.py)."""
    return Window(kernel, _ratio(1, stride), _ratio((kernel - 1) * dilation - pad, stride), _ratio(dilation, stride))


def _transposed_windows(args: dict) -> tuple[Window, Window]:
    kernel, stride, pad, dilation = (_pair(args[name]) for name in ("kernel", "stride", "pad", "dilation"))
    return tuple(_upsampling_window(kernel[axis], stride[axis], pad[axis], dilation[axis]) for axis in (0, 1))


def _conv_transpose_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = {"kernel_size": args["kernel"]}
    for name, torch_name, default in (("stride", "stride", 1), ("pad", "padding", 0),
                                       ("output_pad", "output_padding", 0), ("groups", "groups", 1)):
        if args[name] != default:
            kwargs[torch_name] = args[name]
    if not args["bias"]:
        kwargs["bias"] = False
    if args["dilation"] != 1:
        kwargs["dilation"] = args["dilation"]
    return Emission("ConvTranspose2d", (in_shape[0], args["out"]), kwargs)


register(LayerDef(
    name="conv_transpose",
    doc="2-D transposed convolution (learned upsampling: output size (in - 1) * stride - 2 * pad + "
        "dilation * (kernel - 1) + output_pad + 1).",
    params=(
        Param("out", "int", doc="output channels", minimum=1),
        Param("kernel", "pair", doc="kernel size", minimum=1),
        Param("stride", "pair", 1, minimum=1),
        Param("pad", "pair", 0, doc="removed from each side of the output", minimum=0, aliases=("padding",)),
        Param("output_pad", "pair", 0, doc="added to one side of the output", minimum=0,
              aliases=("output_padding",)),
        Param("dilation", "pair", 1, minimum=1),
        Param("groups", "int", 1, minimum=1),
        Param("bias", "bool", True),
    ),
    shape=_conv_transpose_shape,
    count=lambda s, a: _conv_transpose_weights(s, a) + (a["out"] if a["bias"] else 0),
    macs=lambda s, o, a: _conv_transpose_weights(s, a) * s[1] * s[2],  # per input position, as fvcore counts
    torch=_conv_transpose_torch,
    biases=lambda s, a: a["out"] if a["bias"] else 0,
    reach=lambda s, a: _transposed_windows(a),
    saves=lambda s, o, a, step: _SAVES_INPUT_AND_WEIGHT, autocast=LOW_PRECISION,
    output_mutable=True, weight=True, family="conv",
))


# ---- normalization --------------------------------------------------------------------------

def _bn_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = {}
    if args["eps"] != 1e-5:
        kwargs["eps"] = args["eps"]
    if args["momentum"] != 0.1:
        kwargs["momentum"] = args["momentum"]
    return Emission("BatchNorm2d" if len(in_shape) == 3 else "BatchNorm1d", (in_shape[0],), kwargs)


def _bn_shape(in_shape: Shape, args: dict) -> Shape:
    if len(in_shape) not in (1, 3):
        raise LayerProblem(f"bn expects [channels, height, width] or [features], got {shape_text(in_shape)}")
    return in_shape


register(LayerDef(
    name="bn",
    doc="Batch normalization over channels (BatchNorm2d, or BatchNorm1d after flatten).",
    params=(Param("eps", "float", 1e-5), Param("momentum", "float", 0.1)),
    shape=_bn_shape,
    count=lambda s, a: 2 * s[0],
    macs=_zero,
    torch=_bn_torch,
    biases=lambda s, a: s[0],
    # its input, and the batch's mean and inverse deviation per channel (float32 whatever the input)
    saves=lambda s, o, a, step: (Saved("input"), Saved("new", fixed=2 * s[0], dtype="float32")),
    buffers=lambda s, a: _running_statistics(s[0]),
    output_mutable=True, family="norm", folds_after=("conv",),
))


def _running_statistics(channels: int) -> tuple[tuple[int, str], ...]:
    """Running mean and variance, and the count of batches seen."""
    return ((2 * channels, "float32"), (1, "int64"))


def _lrn_saves(in_shape: Shape, out_shape: Shape, args: dict, step: Step) -> tuple[Saved, ...]:
    """torch's local_response_norm: the input (read three times), the squares padded over channels
    (what the channel-window average pool reads), the scaled sum (what `pow` reads) and its power
    (the divisor)."""
    channels, height, width = in_shape
    return (Saved("input"), Saved("new", (channels + args["size"] - 1) * height * width),
            Saved("new", channels * height * width), Saved("new", channels * height * width))


def _lrn_torch(in_shape: Shape, args: dict) -> Emission:
    return Emission("LocalResponseNorm", (args["size"],),
                    {"alpha": args["alpha"], "beta": args["beta"], "k": args["k"]})


register(LayerDef(
    name="lrn",
    doc="Local response normalization across channels (AlexNet).",
    params=(Param("size", "int", minimum=1), Param("alpha", "float", 1e-4),
            Param("beta", "float", 0.75), Param("k", "float", 1.0)),
    shape=lambda s, a: _spatial(s, "lrn"),
    count=_zero, macs=_zero, torch=_lrn_torch, family="norm",
    # on the CPU its channel-window average pool (avg_pool3d) is on autocast's float32 list
    saves=_lrn_saves, autocast=(("cpu", "widen"),),
))


def _channels_or_features(op: str, in_shape: Shape) -> Shape:
    if len(in_shape) not in (1, 3):
        raise LayerProblem(f"{op} expects [channels, height, width] or [features], got {shape_text(in_shape)}")
    return in_shape


def _eps(args: dict, default: float = 1e-5) -> dict:
    """`eps=` where it differs from torch's default."""
    return {"eps": args["eps"]} if args["eps"] != default else {}


# NOTE: [Layer normalization]
# On a [C, H, W] map, `layernorm` normalizes each position over its C channels: torchvision's
# ConvNeXt `LayerNorm2d` (an `nn.LayerNorm(C)` applied to the NHWC permutation), emitted as that
# class with the same `weight` and `bias` keys; after `flatten`, `nn.LayerNorm(features)`. Its eps
# defaults to ConvNeXt's 1e-6 (torchvision passes `eps=1e-6` to both), not nn.LayerNorm's 1e-5,
# because a CNN uses layer normalization where ConvNeXt does; write `eps=1e-5` for torch's.
LAYER_NORM_2D = '''class LayerNorm2d(nn.LayerNorm):
    """Layer normalization over the channels of an NCHW tensor (torchvision's ConvNeXt)."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = x.permute(0, 3, 1, 2)
        return x'''


def _layernorm_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = _eps(args)
    if not args["affine"]:
        kwargs["elementwise_affine"] = False
    elif not args["bias"]:
        kwargs["bias"] = False
    if len(in_shape) == 3:
        return Emission("LayerNorm2d", (in_shape[0],), kwargs, helper=True)
    return Emission("LayerNorm", (in_shape[0],), kwargs)


register(LayerDef(
    name="layernorm",
    doc="Layer normalization over the channels at each position (ConvNeXt's LayerNorm2d), or over the "
        "last axis (nn.LayerNorm): the features after flatten, the channels of a channels-last tensor; eps "
        "defaults to ConvNeXt's 1e-6.",
    params=(Param("eps", "float", 1e-6), Param("affine", "bool", True, doc="learned scale and shift",
                                                aliases=("elementwise_affine",)),
            Param("bias", "bool", True, doc="the learned shift (with affine)")),
    shape=lambda s, a: _channels_or_features("layernorm", s),
    count=lambda s, a: s[0] * (1 + a["bias"]) if a["affine"] else 0,
    macs=_zero,
    torch=_layernorm_torch,
    biases=lambda s, a: s[0] if a["affine"] and a["bias"] else 0,
    reach=lambda s, a: None if len(s) == 3 else GLOBAL_STATISTICS,  # flat: every feature's statistics
    # its input, and a mean and inverse deviation per position (per sample after flatten)
    saves=lambda s, o, a, step: (Saved("input"), Saved("new", 2 * math.prod(s[1:]), dtype="float32")),
    autocast=(("cuda", "float32"),),
    output_mutable=True, family="norm", helper_source=LAYER_NORM_2D, layout="last",
))


def _groupnorm_shape(in_shape: Shape, args: dict) -> Shape:
    channels = _channels_or_features("groupnorm", in_shape)[0]
    if channels % args["groups"]:
        divisors = [d for d in range(1, channels + 1) if channels % d == 0]
        raise LayerProblem(f"groupnorm channels {channels} are not divisible by groups={args['groups']}",
                           kind="param", param="groups",
                           hint=f"groups must divide {channels}: {', '.join(map(str, divisors[:12]))}"
                                f"{', ...' if len(divisors) > 12 else ''}")
    return in_shape


def _groupnorm_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = _eps(args)
    if not args["affine"]:
        kwargs["affine"] = False
    return Emission("GroupNorm", (args["groups"], in_shape[0]), kwargs)


register(LayerDef(
    name="groupnorm",
    doc="Group normalization: the channels in groups, each normalized over its channels and positions.",
    params=(Param("groups", "int", doc="channel groups (1: over all channels)", minimum=1),
            Param("eps", "float", 1e-5), Param("affine", "bool", True)),
    shape=_groupnorm_shape,
    count=lambda s, a: 2 * s[0] if a["affine"] else 0,
    macs=_zero,
    torch=_groupnorm_torch,
    biases=lambda s, a: s[0] if a["affine"] else 0,
    reach=lambda s, a: GLOBAL_STATISTICS,
    saves=lambda s, o, a, step: (Saved("input"), Saved("new", 2 * a["groups"], dtype="float32")),
    autocast=(("cuda", "float32"),),
    output_mutable=True, family="norm",
))


def _instancenorm_shape(in_shape: Shape, args: dict) -> Shape:
    channels, height, width = _spatial(in_shape, "instancenorm")
    if height * width == 1:
        raise LayerProblem(f"instancenorm needs more than one position per channel, got {shape_text(in_shape)}",
                           hint="PyTorch's InstanceNorm2d rejects a 1x1 map in training")
    return in_shape


def _instancenorm_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = _eps(args)
    for name in ("affine", "track_running_stats"):
        if args[name]:
            kwargs[name] = True
    return Emission("InstanceNorm2d", (in_shape[0],), kwargs)


register(LayerDef(
    name="instancenorm",
    doc="Instance normalization: each channel of each sample over its positions (style transfer).",
    params=(Param("eps", "float", 1e-5), Param("affine", "bool", False),
            Param("track_running_stats", "bool", False, doc="running statistics, used in eval")),
    shape=_instancenorm_shape,
    count=lambda s, a: 2 * s[0] if a["affine"] else 0,
    macs=_zero,
    torch=_instancenorm_torch,
    biases=lambda s, a: s[0] if a["affine"] else 0,
    # in eval, running statistics make it position-wise; without them each map's own statistics
    reach=lambda s, a: None if a["track_running_stats"] else GLOBAL_STATISTICS,
    # its input, a mean and inverse deviation per channel of each sample (and the affine weight repeated per sample)
    saves=lambda s, o, a, step: (Saved("input"), Saved("new", (2 + a["affine"]) * s[0], dtype="float32")),
    buffers=lambda s, a: _running_statistics(s[0]) if a["track_running_stats"] else (),
    output_mutable=True, family="norm",
))


# ---- element-wise activations --------------------------------------------------------------

def _activation(name: str, cls: str, doc: str, inplace: bool = True, params: tuple[Param, ...] = (),
                keywords: Callable[[dict], dict] = lambda args: {}, shape=lambda s, a: s,
                saves=lambda s, o, a, step: SAVES_INPUT, functional: str | None = None) -> None:
    """An element-wise op; `keywords` gives the constructor's keyword arguments from the bound ones,
    `saves` what autograd keeps (its input, unless its gradient is written with its output); the
    functional form, `F.<name>` unless given, takes the same keywords."""
    register(LayerDef(
        name=name, doc=doc, params=params, shape=shape, count=_zero, macs=_zero,
        torch=lambda s, a: Emission(cls, (), keywords(a)), inplace=inplace, family="activation", saves=saves, layout="any",
        functional=functional or f"F.{name}",
    ))


def _output_in_place(in_shape: Shape, out_shape: Shape, args: dict, step: Step) -> tuple[Saved, ...]:
    """LeakyReLU and ELU: their gradient from the output when run in place, from the input otherwise."""
    return SAVES_OUTPUT if step.inplace else SAVES_INPUT


def _saves_output(in_shape: Shape, out_shape: Shape, args: dict, step: Step) -> tuple[Saved, ...]:
    """ReLU, sigmoid, tanh: their gradient is written with their output."""
    return SAVES_OUTPUT


_activation("relu", "ReLU", "max(x, 0).", saves=_saves_output)
_activation("relu6", "ReLU6", "min(max(x, 0), 6) (MobileNet).")
_activation("silu", "SiLU", "x * sigmoid(x), a.k.a. swish (EfficientNet).")
_activation("hardswish", "Hardswish", "x * relu6(x + 3) / 6 (MobileNetV3).")
_activation("hardsigmoid", "Hardsigmoid", "relu6(x + 3) / 6 (MobileNetV3).")
_activation("sigmoid", "Sigmoid", "1 / (1 + exp(-x)).", inplace=False, saves=_saves_output,
            functional="torch.sigmoid")
_activation("tanh", "Tanh", "Hyperbolic tangent (LeNet).", inplace=False, saves=_saves_output, functional="torch.tanh")
_activation("gelu", "GELU", "Gaussian error linear unit.", inplace=False)
_activation("mish", "Mish", "x * tanh(softplus(x)) (YOLOv4).")
# NOTE: [Non-negative slopes] torch's in-place LeakyReLU and ELU fail in backward for a negative
# slope or alpha; both are at least 0 here (the papers' values are positive), so in place is always safe.
_activation("leaky_relu", "LeakyReLU", "max(x, 0) + slope * min(x, 0).",
            params=(Param("slope", "float", 0.01, doc="for negative inputs", minimum=0, aliases=("negative_slope",)),),
            keywords=lambda a: {"negative_slope": a["slope"]} if a["slope"] != 0.01 else {}, saves=_output_in_place)
_activation("elu", "ELU", "x for x > 0, alpha * (exp(x) - 1) otherwise.",
            params=(Param("alpha", "float", 1.0, minimum=0),),
            keywords=lambda a: {"alpha": a["alpha"]} if a["alpha"] != 1.0 else {}, saves=_output_in_place)


def _hardtanh_shape(in_shape: Shape, args: dict) -> Shape:
    if args["max"] <= args["min"]:
        raise LayerProblem(f"hardtanh max {show(args['max'])} must be greater than min {show(args['min'])}",
                           kind="param", param="max")
    return in_shape


_activation("hardtanh", "Hardtanh", "x clamped to [min, max].",
            params=(Param("min", "float", -1.0, aliases=("min_val",)),
                    Param("max", "float", 1.0, aliases=("max_val",))),
            keywords=lambda a: {f"{name}_val": a[name] for name, default in (("min", -1.0), ("max", 1.0))
                                if a[name] != default},
            shape=_hardtanh_shape)


def _prelu_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = {"num_parameters": in_shape[0]} if args["per_channel"] else {}
    if args["init"] != 0.25:
        kwargs["init"] = args["init"]
    return Emission("PReLU", (), kwargs)


register(LayerDef(
    name="prelu", doc="Leaky ReLU with a learned slope: one, or one per channel (feature after flatten).",
    params=(Param("per_channel", "bool", False), Param("init", "float", 0.25, doc="initial slope")),
    shape=lambda s, a: s,
    count=lambda s, a: s[0] if a["per_channel"] else 1,
    macs=_zero,
    torch=_prelu_torch,
    saves=lambda s, o, a, step: _SAVES_INPUT_AND_WEIGHT, autocast=LOW_PRECISION,
    output_mutable=True, family="activation",  # backward reads the input and the slope, not the output
))

register(LayerDef(
    name="identity", doc="Passes its input through unchanged.", params=(),
    shape=lambda s, a: s, count=_zero, macs=_zero,
    torch=lambda s, a: Emission("Identity"), aliases_input=True, layout="any", saves=lambda s, o, a, step: SAVES_NOTHING,
))


def _dropout_shape(in_shape: Shape, args: dict) -> Shape:
    if not 0.0 <= args["p"] <= 1.0:
        raise LayerProblem(f"dropout probability must be in [0, 1], got {args['p']}", kind="param", param="p")
    return in_shape


def _dropout_saves(in_shape: Shape, out_shape: Shape, args: dict, step: Step) -> tuple[Saved, ...]:
    """Its mask (p = 0 returns the input; p = 1 multiplies by a zero scalar)."""
    if args["p"] == 0:
        return SAVES_NOTHING
    if args["p"] == 1:
        return (Saved("new", fixed=1),)
    return (Saved("new", math.prod(in_shape), dtype="mask"),)


register(LayerDef(
    name="dropout", doc="Zeroes elements with probability p in training; identity in eval.",
    params=(Param("p", "float", 0.5),),
    shape=_dropout_shape, count=_zero, macs=_zero,
    torch=lambda s, a: Emission("Dropout", (), {"p": a["p"]}), aliases_input=True, layout="any",
    saves=_dropout_saves, view=lambda s, a: a["p"] == 0, eval_identity=True,
))


# ---- pooling --------------------------------------------------------------------------------

def _pool_params(extra: tuple[Param, ...] = ()) -> tuple[Param, ...]:
    return (
        Param("kernel", "pair", minimum=1),
        Param("stride", "pair", lambda bound: bound["kernel"], doc="defaults to the kernel size", minimum=1),
        Param("pad", "pair", 0, minimum=0, aliases=("padding",)),
        Param("ceil", "bool", False, doc="ceil_mode: round the output size up", aliases=("ceil_mode",)),
    ) + extra


def _pool_shape(op: str):
    def shape(in_shape: Shape, args: dict) -> Shape:
        kernel, pad = _pair(args["kernel"]), _pair(args["pad"])
        if any(p * 2 > k for p, k in zip(pad, kernel)):
            raise LayerProblem(
                f"{op} pad {args['pad']} is more than half the kernel {args['kernel']}",
                kind="param", param="pad",
            )
        return _window(in_shape, args, op, ceil=args["ceil"])
    return shape


def _pool_torch(cls: str):
    def torch(in_shape: Shape, args: dict) -> Emission:
        kwargs = {"kernel_size": args["kernel"], "stride": args["stride"]}
        if args["pad"] != 0:
            kwargs["padding"] = args["pad"]
        if args["ceil"]:
            kwargs["ceil_mode"] = True
        if not args.get("count_include_pad", True):
            kwargs["count_include_pad"] = False
        return Emission(cls, (), kwargs)
    return torch


def _with_indices(out_shape: Shape) -> tuple[Saved, ...]:
    """A max pooling's input, and where each maximum came from (int64)."""
    return (Saved("input"), Saved("new", math.prod(out_shape), dtype="int64"))


def _pool_macs(in_shape: Shape, out_shape: Shape, args: dict) -> int:
    return 0  # pooling does comparisons/additions, not multiply-accumulates


register(LayerDef(
    name="maxpool", doc="2-D max pooling.", params=_pool_params(),
    shape=_pool_shape("maxpool"), count=_zero, macs=_pool_macs, torch=_pool_torch("MaxPool2d"),
    reach=lambda s, a: _windows(a), saves=lambda s, o, a, step: _with_indices(o), output_mutable=True, family="pool",
    functional="F.max_pool2d",
))
register(LayerDef(
    name="avgpool", doc="2-D average pooling.",
    params=_pool_params((Param("count_include_pad", "bool", True),)),
    shape=_pool_shape("avgpool"), count=_zero, macs=_pool_macs, torch=_pool_torch("AvgPool2d"),
    reach=lambda s, a: _windows(a), output_mutable=True, family="pool", functional="F.avg_pool2d",
))


def _adaptive(name: str, cls: str, doc: str, functional: str, saves) -> None:
    def shape(in_shape: Shape, args: dict) -> Shape:
        channels = _spatial(in_shape, name)[0]
        height, width = _pair(args["size"])
        return (channels, height, width)

    def torch(in_shape: Shape, args: dict) -> Emission:
        return Emission(cls, (_pair(args["size"]),))

    register(LayerDef(name=name, doc=doc, params=(Param("size", "pair", 1, minimum=1),),
                      shape=shape, count=_zero, macs=_zero, torch=torch, reach=_adaptive_reach, saves=saves,
                      output_mutable=True, feature_end=True, family="pool", functional=functional))


def _adaptive_reach(in_shape: Shape, args: dict) -> tuple[Window, Window] | str:
    """A fixed window where the input is a multiple of the output (k = stride = in/out; in = out: identity);
    global pooling (output 1 from a larger input) or windows of varying size reach the whole input."""
    windows = []
    for size, out in zip(in_shape[1:], _pair(args["size"])):
        if size % out or (out == 1 and size > 1):
            return GLOBAL
        windows.append(Window(size // out, size // out))
    return tuple(windows)


_adaptive("adaptive_avgpool", "AdaptiveAvgPool2d",
          "Average-pools to a fixed output size (size=1: global average pooling).", "F.adaptive_avg_pool2d",
          # torch computes a 1x1 output as a mean, whose gradient needs no tensor
          saves=lambda s, o, a, step: SAVES_NOTHING if o[1:] == (1, 1) else SAVES_INPUT)
_adaptive("adaptive_maxpool", "AdaptiveMaxPool2d", "Max-pools to a fixed output size.", "F.adaptive_max_pool2d",
          saves=lambda s, o, a, step: _with_indices(o))


# ---- upsampling -----------------------------------------------------------------------------

def _upsample_shape(in_shape: Shape, args: dict) -> Shape:
    channels, height, width = _spatial(in_shape, "upsample")
    scale_h, scale_w = _pair(args["scale"])
    return (channels, height * scale_h, width * scale_w)


def _upsample_window(scale: int, mode: str) -> Window:
    """Nearest: output i copies input i // scale, the window of a transposed convolution with kernel
    = stride = scale. Bilinear (align_corners=False): output i reads floor(x) and floor(x) + 1 for
    x = (i + 0.5) / scale - 0.5 (the second with weight 0 where x is whole; x clamped at the borders),
    so the inputs within `radius` of x: x is an odd multiple of 1 / (2 * scale) for an even scale,
    a multiple of 1 / scale for an odd one."""
    if scale == 1:
        return Window()
    if mode == "nearest":
        return _upsampling_window(scale, scale, 0, 1)
    radius = Fraction(2 * scale - 1, 2 * scale) if scale % 2 == 0 else Fraction(scale - 1, scale)
    return Window(2, Fraction(1, scale), radius + Fraction(scale - 1, 2 * scale), 2 * radius)


def _upsample_torch(in_shape: Shape, args: dict) -> Emission:
    kwargs = {"scale_factor": args["scale"], "mode": args["mode"]}
    if args["mode"] == "bilinear":
        kwargs["align_corners"] = False
    return Emission("Upsample", (), kwargs)


register(LayerDef(
    name="upsample",
    doc="Enlarges height and width by integer factors, repeating pixels (\"nearest\") or interpolating "
        "(\"bilinear\", align_corners=False).",
    params=(Param("scale", "pair", 2, doc="factor along height and width", minimum=1, aliases=("scale_factor",)),
            Param("mode", "str", "nearest", choices=("nearest", "bilinear"))),
    shape=_upsample_shape, count=_zero, macs=_zero, torch=_upsample_torch,
    reach=lambda s, a: tuple(_upsample_window(scale, a["mode"]) for scale in _pair(a["scale"])),
    saves=lambda s, o, a, step: SAVES_NOTHING, autocast=(("cuda", "float32"),),
    output_mutable=True, family="upsample",
))


# ---- reshaping and fully connected ---------------------------------------------------------

register(LayerDef(
    name="flatten", doc="Flattens [C, H, W] to [C*H*W].", params=(),
    shape=lambda s, a: (math.prod(s),), count=_zero, macs=_zero,
    torch=lambda s, a: Emission("Flatten", (1,)), aliases_input=True, feature_end=True, functional="torch.flatten",
    saves=lambda s, o, a, step: SAVES_NOTHING,
))


def _linear_shape(in_shape: Shape, args: dict) -> Shape:
    if len(in_shape) != 1:
        raise LayerProblem(
            f"linear expects a flat [features] input, got {shape_text(in_shape)}",
            hint="insert 'flatten' (or a global pool, then 'flatten') before it" + (
                "; for a linear at every position, 'permute([1, 2, 0])' to [height, width, channels] first"
                if len(in_shape) == 3 and in_shape[1:] != (1, 1) else ""),
        )
    if "in_features" in args and args["in_features"] is not None and args["in_features"] != in_shape[0]:
        raise LayerProblem(
            f"linear expects {args['in_features']} input features, got {in_shape[0]} "
            f"(input shape {shape_text(in_shape)})",
            hint=f"the preceding layers produce {in_shape[0]} features; fix in_features or the layers before",
        )
    return (args["out"],)


register(LayerDef(
    name="linear", doc="Fully connected layer along the last axis (nn.Linear): on [features], or at every position "
                       "of a permuted, channels-last tensor.",
    params=(Param("out", "int", doc="output features", minimum=1), Param("bias", "bool", True),
            Param("in_features", "int", None, doc="optional: asserts the input size")),
    shape=_linear_shape,
    count=lambda s, a: s[0] * a["out"] + (a["out"] if a["bias"] else 0),
    macs=lambda s, o, a: s[0] * a["out"],
    torch=lambda s, a: Emission("Linear", (s[0], a["out"]), {} if a["bias"] else {"bias": False}),
    biases=lambda s, a: a["out"] if a["bias"] else 0,
    reach=lambda s, a: GLOBAL,
    # its input (for the weight gradient), and its weight where the input needs a gradient
    saves=lambda s, o, a, step: _SAVES_INPUT_AND_WEIGHT if step.input_grad else SAVES_INPUT,
    autocast=LOW_PRECISION,
    output_mutable=True, weight=True, family="linear", layout="last",
))

# NOTE: [Axes]
# Every tensor is canonical — [channels, height, width], or [features] after flatten — except
# between a `permute` and the `permute` that restores it. The checker names each tensor's axes
# ("C", "H", "W"; "F" for features) and lets a non-canonical tensor reach only element-wise ops
# (`layout="any"`) and ops along the last axis (`layout="last"`: linear and layernorm, which then
# apply at every other position, their rules seeing the last axis as [features]); it must be
# canonical again before it leaves a chain (a block, group, combinator arm or tap). So the
# receptive fields and valid input sizes, which follow "H" and "W", stay exact through a permute.

CANONICAL_AXES = {1: ("F",), 3: ("C", "H", "W")}


def rule_shape(op: "LayerDef", in_shape: Shape, axes: tuple[str, ...] | None) -> Shape:
    """The shape `op`'s rules see: one position's last axis, as [features], for an op along the last
    axis of a permuted tensor; else the tensor's own."""
    return (in_shape[-1],) if axes is not None and op.layout == "last" else in_shape


def axes_text(axes: tuple[str, ...]) -> str:
    names = {"C": "channels", "H": "height", "W": "width", "F": "features"}
    return "[" + ", ".join(names.get(a, a) for a in axes) + "]"


def _permutation(in_shape: Shape, args: dict) -> tuple[int, ...]:
    dims = args["dims"]
    if sorted(dims) != list(range(len(in_shape))):
        raise LayerProblem(f"permute dims {show(list(dims))} are not an order of the {len(in_shape)} axes of "
                           f"{shape_text(in_shape)} (per sample, without the batch axis)", kind="param", param="dims",
                           hint=f"give each of {', '.join(map(str, range(len(in_shape))))} once, e.g. "
                                f"permute({list(range(1, len(in_shape))) + [0]})")
    return dims


def _list_helper(cls: str, doc: str, attribute: str, result: str) -> str:
    """The source of a parameter-free module holding one list of integers, `attribute`."""
    return f'''class {cls}(nn.Module):
    """{doc}"""

    def __init__(self, {attribute}: tuple) -> None:
        super().__init__()
        self.{attribute} = list({attribute})

    def forward(self, x: Tensor) -> Tensor:
        return {result}

    def extra_repr(self) -> str:
        return f"{attribute}={{self.{attribute}}}"'''


register(LayerDef(
    name="permute",
    doc="Reorders the axes of each sample (torch.permute without the batch axis): permute([1, 2, 0]) makes "
        "[C, H, W] channels-last [H, W, C].",
    params=(Param("dims", "dims", doc="the input axis each output axis takes"),),
    shape=lambda s, a: tuple(s[d] for d in _permutation(s, a)), count=_zero, macs=_zero,
    torch=lambda s, a: Emission("Permute", ((0, *(d + 1 for d in a["dims"])),), helper=True),
    axes=lambda axes, a: tuple(axes[d] for d in a["dims"]),
    aliases_input=True, layout="any",
    helper_source=_list_helper("Permute", "Reorders the axes of x (dims includes the batch axis), as "
                               "torchvision.ops.Permute.", "dims", "torch.permute(x, self.dims)"),))


def _reshape_shape(in_shape: Shape, args: dict) -> Shape:
    dims, total = args["shape"], math.prod(in_shape)
    if len(dims) not in CANONICAL_AXES:
        raise LayerProblem(f"reshape gives [features] or [channels, height, width], not {len(dims)} axes "
                           f"({show(list(dims))})", kind="param", param="shape")
    if dims.count(-1) > 1 or any(d < 1 and d != -1 for d in dims):
        raise LayerProblem(f"reshape sizes must be at least 1, with at most one -1 to infer, got {show(list(dims))}",
                           kind="param", param="shape")
    known = math.prod(d for d in dims if d != -1)
    if -1 in dims:
        if total % known:
            raise LayerProblem(f"reshape cannot infer the -1 in {show(list(dims))}: {total} elements of "
                               f"{shape_text(in_shape)} are not a multiple of {known}")
        dims = tuple(total // known if d == -1 else d for d in dims)
    if math.prod(dims) != total:
        raise LayerProblem(f"reshape to {shape_text(dims)} needs {math.prod(dims)} elements, but "
                           f"{shape_text(in_shape)} has {total}",
                           hint="the sizes must multiply to the input's element count (or use -1 for one of them)")
    return dims


register(LayerDef(
    name="reshape",
    doc="Gives each sample another shape with the same elements (torch.reshape / view without the batch axis); "
        "one size may be -1. The result is read as [features] or [channels, height, width].",
    params=(Param("shape", "dims", doc="the new per-sample shape"),),
    shape=_reshape_shape, count=_zero, macs=_zero,
    torch=lambda s, a: Emission("Reshape", (_reshape_shape(s, a),), helper=True),
    axes=lambda axes, a: CANONICAL_AXES[len(a["shape"])],
    reach=lambda s, a: GLOBAL,  # an output position may hold any input position's values
    aliases_input=True, layout="any", couples_axes=True,
    helper_source=_list_helper("Reshape", "Gives each sample of x the shape `shape` (the batch axis is kept).",
                               "shape", "x.reshape([x.shape[0]] + self.shape)"),))


def _param_shape(in_shape: Shape, args: dict) -> Shape:
    dims = args["shape"]
    if min(dims) < 1:
        raise LayerProblem(f"param shape sizes must be at least 1, got {show(list(dims))}", kind="param", param="shape")
    fits = len(dims) <= len(in_shape) and all(d in (1, n) for d, n in zip(reversed(dims), reversed(in_shape)))
    if not fits:
        raise LayerProblem(f"param of shape {shape_text(dims)} does not broadcast over the input "
                           f"{shape_text(in_shape)}: each size must be 1 or the input's, aligned from the last axis",
                           kind="param", param="shape",
                           hint=f"e.g. {shape_text((in_shape[0],) + (1,) * (len(in_shape) - 1))} for one value per "
                                f"{'channel' if len(in_shape) == 3 else 'feature'}")
    return in_shape


register(LayerDef(
    name="param",
    doc="A learned tensor of `shape`, initially `init` everywhere, that multiplies the input (op \"mul\": "
        "ConvNeXt's layer scale) or is added to it (\"add\"), broadcast over the other axes; its "
        "state_dict key is its label.",
    params=(Param("shape", "dims", doc="its shape, broadcast against the input's"),
            Param("init", "float", 1.0, doc="its initial value"),
            Param("op", "str", "mul", choices=("mul", "add"))),
    shape=_param_shape, count=lambda s, a: math.prod(a["shape"]), macs=_zero,
    torch=lambda s, a: Emission("Parameter", (a["shape"], a["init"], a["op"])),
    biases=lambda s, a: math.prod(a["shape"]) if a["op"] == "add" else 0,
    # x * p saves x (for p's gradient; p itself is a parameter); x + p saves nothing
    saves=lambda s, o, a, step: SAVES_INPUT if a["op"] == "mul" else SAVES_NOTHING,
    output_mutable=True, layout="any", parameter=True, family="norm",
))

def _channel_shuffle_shape(in_shape: Shape, args: dict) -> Shape:
    channels = _spatial(in_shape, "channel_shuffle")[0]
    if channels % args["groups"]:
        raise LayerProblem(f"channel_shuffle channels {channels} are not divisible by groups={args['groups']}",
                           kind="param", param="groups")
    return in_shape


register(LayerDef(
    name="channel_shuffle",
    doc="Interleaves the channels of groups (ShuffleNet): channel g * (C / groups) + k moves to k * groups + g.",
    params=(Param("groups", "int", minimum=1),),
    shape=_channel_shuffle_shape, count=_zero, macs=_zero,
    torch=lambda s, a: Emission("ChannelShuffle", (a["groups"],)), saves=lambda s, o, a, step: SAVES_NOTHING,
    output_mutable=True,  # a copy (also for groups=1); its backward shuffles back and reads nothing
))

# ---- regularization and arithmetic ---------------------------------------------------------

def _probability(name: str):
    def shape(in_shape: Shape, args: dict) -> Shape:
        if not 0.0 <= args["p"] < 1.0:
            raise LayerProblem(f"{name} probability must be in [0, 1), got {args['p']}", kind="param", param="p")
        return in_shape
    return shape


register(LayerDef(
    name="stochastic_depth",
    doc="In training, drops the whole input of a sample (mode \"row\") or of the batch (\"batch\") with "
        "probability p and rescales the rest; identity in eval (EfficientNet).",
    params=(Param("p", "float"), Param("mode", "str", "row", choices=("row", "batch"))),
    shape=_probability("stochastic_depth"), count=_zero, macs=_zero, layout="any",
    torch=lambda s, a: Emission("StochasticDepth", (a["p"], a["mode"]), helper=True),
    # the noise it multiplies by: one value per sample ("row") or per batch; p = 0 returns the input
    saves=lambda s, o, a, step: SAVES_NOTHING if a["p"] == 0 or not step.input_grad else (
        (Saved("new", 1),) if a["mode"] == "row" else (Saved("new", fixed=1),)),
    view=lambda s, a: a["p"] == 0, eval_identity=True,
    helper_source='''class StochasticDepth(nn.Module):
    """In training, drops each sample ("row") or the whole batch ("batch") with probability p."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.dim() - 1) if self.mode == "row" else [1] * x.dim()
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        return x * noise.div_(survival)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"''',
))


register(LayerDef(
    name="mul", doc="Multiplies by a constant (the residual scaling of Inception-ResNet).",
    params=(Param("factor", "float"),),
    shape=lambda s, a: s, count=_zero, macs=_zero, layout="any",
    torch=lambda s, a: Emission("Mul", (a["factor"],), helper=True), saves=lambda s, o, a, step: SAVES_NOTHING,
    helper_source='''class Mul(nn.Module):
    """Multiplies by a constant factor."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"''',
))


def _pad_identity_shape(in_shape: Shape, args: dict) -> Shape:
    channels, height, width = _spatial(in_shape, "pad_identity")
    if args["out"] < channels:
        raise LayerProblem(f"pad_identity cannot reduce channels from {channels} to {args['out']}",
                           kind="param", param="out")
    stride = args["stride"]
    return (args["out"], -(-height // stride), -(-width // stride))


register(LayerDef(
    name="pad_identity",
    doc="Parameter-free shortcut: subsamples by stride and zero-pads channels up to out "
        "(option A of the CIFAR ResNets).",
    params=(Param("out", "int", minimum=1), Param("stride", "int", 1, minimum=1)),
    shape=_pad_identity_shape, count=_zero, macs=_zero,
    torch=lambda s, a: Emission("PadIdentity", (a["out"] - s[0], a["stride"]), helper=True),
    reach=lambda s, a: (Window(stride=a["stride"]), Window(stride=a["stride"])), aliases_input=True,
    saves=lambda s, o, a, step: SAVES_NOTHING, view=lambda s, a: a["out"] == s[0],  # zero channels added: a copy
    helper_source='''class PadIdentity(nn.Module):
    """Parameter-free shortcut: subsample by `stride`, then add `extra` zero channels (half before)."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra = extra
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.extra > 0:
            x = nn.functional.pad(x, [0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2])
        return x

    def extra_repr(self) -> str:
        return f"extra={self.extra}, stride={self.stride}"''',
))

def _zeropad_shape(in_shape: Shape, args: dict) -> Shape:
    channels, height, width = _spatial(in_shape, "zeropad")
    height += args["top"] + args["bottom"]
    width += args["left"] + args["right"]
    if height < 1 or width < 1:
        raise LayerProblem(f"zeropad leaves an empty output ({height} x {width}) from {shape_text(in_shape)}")
    return (channels, height, width)


register(LayerDef(
    name="zeropad",
    doc="Pads with zeros on each side; negative amounts crop (NASNet shifts a path by one pixel).",
    params=(Param("left", "int"), Param("right", "int", lambda b: b["left"]),
            Param("top", "int", lambda b: b["left"]), Param("bottom", "int", lambda b: b["top"])),
    shape=_zeropad_shape, count=_zero, macs=_zero,
    torch=lambda s, a: Emission("ZeroPad2d", ((a["left"], a["right"], a["top"], a["bottom"]),)),
    saves=lambda s, o, a, step: SAVES_NOTHING,
    reach=lambda s, a: (Window(pad=a["top"]), Window(pad=a["left"])),
))

def signature(layer: LayerDef) -> str:
    """`conv(out, kernel, stride=1, ...)`, as a user writes it."""
    parts = []
    for p in layer.params:
        if p.default is REQUIRED:
            parts.append(p.name)
        elif callable(p.default):
            parts.append(f"{p.name}=<{p.doc or 'derived'}>")
        else:
            parts.append(f"{p.name}={show(p.default)}")
    return f"{layer.name}({', '.join(parts)})" if parts else layer.name


def _torch_name(layer: LayerDef) -> str:
    """The PyTorch class the op emits (`nn.Conv2d`; a helper class netdsl writes by its name), for
    sample arguments on a [8, 16, 16] input."""
    samples = {"int": 1, "float": 0.5, "pair": 1, "bool": True, "dims": (-1,)}
    args = {}
    for p in layer.params:
        if p.default is REQUIRED:
            args[p.name] = p.choices[0] if p.choices else samples[p.kind]
        else:
            args[p.name] = p.default(args) if callable(p.default) else p.default
    emission = layer.torch((8, 16, 16), args)
    return emission.cls if emission.helper else f"{emission.module or 'nn'}.{emission.cls}"


def reference(layer: LayerDef) -> str:
    """One op's entry for `netdsl layers NAME`: its signature, what it does, the PyTorch class it
    emits, and each parameter's kind, default, bounds, choices, spellings and meaning."""
    lines = [signature(layer), f"    {layer.doc}", f"    PyTorch: {_torch_name(layer)}"]
    for p in layer.params:
        facts = [p.kind]
        if p.default is REQUIRED:
            facts.append("required")
        elif not callable(p.default):
            facts.append(f"default {show(p.default)}")
        if p.minimum is not None:
            facts.append(f"at least {p.minimum}")
        if p.choices:
            facts.append("one of " + ", ".join(show(choice) for choice in p.choices))
        if p.aliases:
            facts.append("also spelled " + ", ".join(p.aliases))
        lines.append(f"    {p.name}: {'; '.join(facts)}" + (f" — {p.doc}" if p.doc else ""))
    return "\n".join(lines)


def markdown_table() -> str:
    """The registry as the Markdown table in docs/language.md."""
    rows = ["| layer | PyTorch | description |", "|---|---|---|"]
    for name, layer in sorted(REGISTRY.items()):
        if layer.plugin:
            continue  # the built-in ops only: the table documents netdsl itself
        torch_name = _torch_name(layer)
        aliases = layer.aliases()
        doc = layer.doc + (" Aliases: " + ", ".join(f"`{a}` = `{r}`" for a, r in aliases.items()) + "."
                           if aliases else "")
        rows.append(f"| `{signature(layer)}` | `{torch_name}` | {doc} |")
    return "\n".join(rows) + "\n"


load_plugins()
