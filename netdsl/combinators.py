"""The combinator registry: the single source of truth for every combinator keyword.

A combinator (`residual { }`, `inception { }`, ...) runs chains — its *arms* — on the same input
and joins them. Each declares, in one `CombinatorDef`: its keyword, how its body becomes arms,
the shape rule that joins them, how it is emitted (the lines of `forward`), drawn and labelled.
The checker builds one `graph.Merge` node of the combinator's kind; the walker
(`netdsl/walk.py`) runs its arms; every pass reads what it needs from here. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .layers import LayerProblem, Shape
from .text import shape_text


@dataclass(frozen=True)
class DrawSpec:
    """How `netdsl draw` shows a merge: its arms end in a small round node showing `symbol`.
    `styles[i]` names the style of arm i's edges into the join ("skip", "identity", "dashed",
    "plain"); an arm without one is "identity" when empty (the input itself) and "plain" otherwise.
    `columns`: each arm is kept in a column of its own (parallel branches). `symbol` None: the
    arm is a side branch ending in an output of its own (an auxiliary head)."""

    symbol: str | None
    tooltip: str = ""
    columns: bool = False
    styles: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class CombinatorDef:
    keyword: str
    doc: str
    # How the body becomes arms: "chain" (the body is one arm), "branches" (each layer statement or
    # `a -> b` chain of the body is an arm) or "module" (the body is a named module, the one arm).
    body: str
    # The joined shape from the merge's input shape and each arm's output shape; raises LayerProblem.
    shape: Callable[[Shape, list[Shape]], Shape]
    # Writes the merge into `forward`: (writer, merge, input variable) -> the output variable.
    # The writer offers fresh(name), line(text), chain(nodes, source, target), attribute(name)
    # and owned(merge, arm) (the arm's result is a fresh tensor nobody else reads: see emit.py).
    emit: Callable
    label: str  # what summary and hover call it
    type_name: str  # the module type of a labelled one (its emitted class name)
    draw: DrawSpec
    input_arm: int | None = None  # the input itself is this arm (dense, gate: 0)
    shortcut: bool = False  # `keyword { body } shortcut stmt` gives a second arm
    project: bool = False  # without a shortcut, the second arm is the identity, or a projection to the body's shape
    root_only: bool = False  # allowed only in the network's own body
    training_output: bool = False  # its arm's result is an extra output of the model in training
    passthrough: bool = False  # its output is its input (the arm is a side computation)
    fresh_output: bool = True  # its result is a new tensor whose backward reads neither it nor its arms'
    size_label: str = ""  # how the valid-input analysis names it ("concat"); default the keyword
    # The shape arm i of n starts from, when not the merge's input (split: a part of its channels);
    # raises LayerProblem. Such an arm reads a part of the input, at the same positions.
    arm_input: Callable[[Shape, int, int], Shape] | None = None
    # The arms whose results autograd keeps for the merge's backward (gate: the input and the gate,
    # each for the other's gradient; sums and concatenations keep none); None: every arm's.
    saves_arms: tuple[int, ...] | None = None

    def saved_arms(self, count: int) -> tuple[int, ...]:
        return tuple(range(count)) if self.saves_arms is None else self.saves_arms

    @property
    def limit_name(self) -> str:
        return self.size_label or self.keyword


COMBINATORS: dict[str, CombinatorDef] = {}


def register(combinator: CombinatorDef) -> CombinatorDef:
    COMBINATORS[combinator.keyword] = combinator
    return combinator


# ---- residual ---------------------------------------------------------------------------------

def _residual_shape(in_shape: Shape, arms: list[Shape]) -> Shape:
    body, shortcut = arms
    if shortcut != body:
        raise LayerProblem(
            f"residual add: the body gives {shape_text(body)} but the shortcut gives {shape_text(shortcut)}",
            hint=_projection_hint(in_shape, body))
    return body


def projection_stride(in_shape: Shape, out_shape: Shape) -> "int | tuple[int, int] | None":
    """The stride of the 1x1 convolution that takes `in_shape`'s height and width to `out_shape`'s
    (one number when both agree), or None when no stride does."""
    strides = [next((s for s in range(1, size + 1) if (size - 1) // s + 1 == target), None)
               for size, target in zip(in_shape[1:], out_shape[1:])]
    if None in strides:
        return None
    return strides[0] if strides[0] == strides[1] else tuple(strides)


def _projection_hint(in_shape: Shape, body: Shape) -> str:
    """The shortcut that would give the body's shape from the residual's input, with its numbers."""
    if in_shape == body:
        return f"the body keeps its input's shape {shape_text(body)}: leave the shortcut out (the identity)"
    stride = projection_stride(in_shape, body) if len(in_shape) == len(body) == 3 else None
    if stride is not None:
        written = list(stride) if isinstance(stride, tuple) else stride
        return (f"a projection from {shape_text(in_shape)}: "
                f"'shortcut {{ conv({body[0]}, 1{'' if stride == 1 else f', stride={written}'}, bias=false)  bn }}'")
    return "make the shortcut produce the body's shape"


def _residual_emit(writer, merge, source: str) -> str:
    body, shortcut = merge.arms
    out = writer.fresh("out")
    result = writer.chain(body, source, out)
    identity = writer.chain(shortcut, source, writer.fresh("identity")) if shortcut else source
    if writer.owned(merge, 0) and result == out:  # NOTE: [In-place activations] in inplace.py
        writer.line(f"{out} += {identity}")
    else:
        writer.line(f"{out} = {result} + {identity}")
    return out


register(CombinatorDef(
    keyword="residual", doc="body(x) + shortcut(x); the shortcut is the identity, or a generated 1x1 "
                            "projection with batch norm when the body changes the shape (torchvision's downsample)",
    body="chain", shape=_residual_shape, emit=_residual_emit, label="residual", type_name="Residual",
    draw=DrawSpec("+", "residual add", styles=(None, "skip")), shortcut=True, project=True,
    saves_arms=(),
))


# ---- concatenation ----------------------------------------------------------------------------

def _concatenated(keyword: str):
    """The shape rule of branches concatenated on channels: equal heights and widths."""
    def shape(in_shape: Shape, arms: list[Shape]) -> Shape:
        first = arms[0]
        for index, arm in enumerate(arms):
            if len(arm) != 3 or arm[1:] != first[1:]:
                raise LayerProblem(
                    f"{keyword} branches disagree on spatial size: branch 1 gives {shape_text(first)}, "
                    f"branch {index + 1} gives {shape_text(arm)}",
                    hint="concatenation needs equal height and width; adjust stride or padding")
        return (sum(arm[0] for arm in arms),) + first[1:]
    return shape


def _dense_shape(in_shape: Shape, arms: list[Shape]) -> Shape:
    _, body = arms
    if len(in_shape) != 3 or len(body) != 3 or body[1:] != in_shape[1:]:
        raise LayerProblem(
            f"dense: the body turns {shape_text(in_shape)} into {shape_text(body)}, but concatenation with the "
            "input needs the same height and width", hint="keep stride 1 and 'same' padding inside a dense body")
    return (in_shape[0] + body[0],) + in_shape[1:]


def _arm_results(writer, merge, sources: list[str]) -> list[str]:
    """Each arm written from its source variable into `branchN`; the variables holding the results."""
    return [writer.chain(arm, source, writer.fresh(f"branch{index + 1}"))
            for index, (arm, source) in enumerate(zip(merge.arms, sources))]


def _concatenation(writer, branches: list[str]) -> str:
    out = writer.fresh("out")
    writer.line(f"{out} = torch.cat([{', '.join(branches)}], 1)")
    return out


def _concat_emit(writer, merge, source: str) -> str:
    return _concatenation(writer, _arm_results(writer, merge, [source] * len(merge.arms)))


_CONCAT_DRAWING = DrawSpec("‖", "concatenate channels", columns=True)

register(CombinatorDef(
    keyword="inception", doc="each statement of the body is a branch from the input; their outputs are "
                             "concatenated on channels",
    body="branches", shape=_concatenated("inception"), emit=_concat_emit, label="concat", type_name="Inception",
    draw=_CONCAT_DRAWING, size_label="concat",
    saves_arms=(),
))
register(CombinatorDef(
    keyword="dense", doc="the input concatenated on channels with body(input) (DenseNet)",
    body="chain", shape=_dense_shape, emit=_concat_emit, label="dense", type_name="Dense",
    draw=_CONCAT_DRAWING, input_arm=0, size_label="concat",
    saves_arms=(),
))


def _split_input(in_shape: Shape, index: int, count: int) -> Shape:
    if len(in_shape) != 3 or in_shape[0] % count:
        raise LayerProblem(f"split: {shape_text(in_shape)} cannot be cut into {count} equal parts along its channels",
                           hint="a split needs [channels, height, width] with channels divisible by its branches")
    return (in_shape[0] // count,) + in_shape[1:]


def _split_emit(writer, merge, source: str) -> str:
    parts = [writer.fresh(f"part{index + 1}") for index in range(len(merge.arms))]
    writer.line(f"{', '.join(parts)}{',' if len(parts) == 1 else ''} = {source}.chunk({len(parts)}, 1)")
    return _concatenation(writer, _arm_results(writer, merge, parts))


register(CombinatorDef(
    keyword="split", doc="the input's channels cut into as many equal parts as the body has branches, branch i "
                         "applied to part i, the results concatenated on channels (ShuffleNet v2)",
    body="branches", shape=_concatenated("split"), emit=_split_emit, label="split", type_name="Split",
    draw=DrawSpec("‖", "split channels, then concatenate", columns=True), arm_input=_split_input,
    size_label="concat",
    saves_arms=(),
))


# ---- sum --------------------------------------------------------------------------------------

def _add_shape(in_shape: Shape, arms: list[Shape]) -> Shape:
    first = arms[0]
    for index, shape in enumerate(arms):
        if shape != first:
            raise LayerProblem(f"add: branch 1 gives {shape_text(first)} but branch {index + 1} gives "
                               f"{shape_text(shape)}", hint="summed branches need identical shapes")
    return first


def _add_emit(writer, merge, source: str) -> str:
    terms = _arm_results(writer, merge, [source] * len(merge.arms))
    out = writer.fresh("out")
    writer.line(f"{out} = {' + '.join(terms)}")
    return out


register(CombinatorDef(
    keyword="add", doc="each statement of the body is a branch (from the input, or from a named tensor); "
                       "their outputs are summed element-wise",
    body="branches", shape=_add_shape, emit=_add_emit, label="add", type_name="Add",
    draw=DrawSpec("+", "sum", columns=True),
    saves_arms=(),
))


# ---- gate -------------------------------------------------------------------------------------

def _gate_shape(in_shape: Shape, arms: list[Shape]) -> Shape:
    _, body = arms
    if body != in_shape and not (len(in_shape) == 3 and body == (in_shape[0], 1, 1)):
        expected = shape_text((in_shape[0], 1, 1)) if len(in_shape) == 3 else shape_text(in_shape)
        raise LayerProblem(
            f"gate: the body gives {shape_text(body)}, but multiplying the input {shape_text(in_shape)} needs "
            f"{expected} or {shape_text(in_shape)}",
            hint="end the body with as many channels as its input, e.g. conv(in.channels, 1)")
    return in_shape


def _gate_emit(writer, merge, source: str) -> str:
    scale = writer.chain(merge.arms[1], source, writer.fresh("scale"))
    out = writer.fresh("out")
    writer.line(f"{out} = {source} * {scale}")
    return out


register(CombinatorDef(
    keyword="gate", doc="the input multiplied by body(input), broadcast over space (squeeze-and-excitation)",
    body="chain", shape=_gate_shape, emit=_gate_emit, label="gate", type_name="Gate",
    draw=DrawSpec("×", "input × gate", styles=("plain", "dashed")), input_arm=0, fresh_output=False,
    saves_arms=(0, 1),
))


# ---- auxiliary head ---------------------------------------------------------------------------

def _aux_emit(writer, merge, source: str) -> str:
    (head,) = merge.arms[0]
    writer.line("if self.training:")
    writer.line(f"    aux.append({writer.attribute(head.name)}({source}))")
    return source


register(CombinatorDef(
    keyword="aux", doc="an auxiliary head on the current tensor: an extra output in training (GoogLeNet)",
    body="module", shape=lambda in_shape, arms: in_shape, emit=_aux_emit, label="aux head", type_name="group",
    draw=DrawSpec(None), root_only=True, training_output=True, passthrough=True, fresh_output=False,
    saves_arms=(),
))
