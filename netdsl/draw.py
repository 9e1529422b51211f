"""Stage 4b — draw: the checked graph (`netdsl/graph.py`) → a Graphviz diagram (DOT, SVG, PNG, PDF).

The diagram is folded from the source, not traced: a module is one node, or a cluster once it lies
above `--depth`; consecutive copies of one block are drawn once with their count; residual, concat,
sum, gate and auxiliary-head combinators appear as the joins they are. Every number on it (shapes
on edges, parameters and MACs on nodes) is the checker's; nothing is recomputed here.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import graphviz

from .combinators import COMBINATORS
from .errors import OptionError
from .graph import Layer, Module, Network, Node, Shape, walk
from .layers import REGISTRY
from .text import human

# NOTE: [Default depth]
# No fixed depth suits the zoo: ResNet's blocks sit two levels down, EfficientNet's squeeze-excitation
# five. By default `draw` takes the deepest uniform depth whose drawing is at most HEIGHT_BUDGET lines
# of text tall along its tallest path (`_Drawer.height`; one line is about 19 pt, so 120 lines make a
# PNG about 3,000 px tall at 96 dpi). Parallel branches cost width, not height, so GoogLeNet opens its
# inception modules (depth 2) and DenseNet its dense layers (depth 4), while ResNet-152 stays at its
# stages (depth 2: 17 boxes, each stage as its first block and "bottleneck ×35"). `--depth` overrides.
HEIGHT_BUDGET = 120

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": None}  # suffix → `dot -T` format
PNG_DPI = 96
# `--size`: the largest a figure may be, in inches (Graphviz shrinks a larger drawing to fit, keeping
# its proportions): a column of a two-column paper, a page's text block, a 16:9 slide.
SIZES = {"column": (3.5, 9.0), "page": (7.0, 9.5), "slide": (13.33, 7.5)}
INSTALL_HINT = "install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz)"

_SKIP = {"color": "#c0392b", "fontcolor": "#c0392b", "penwidth": "1.6"}  # residual shortcuts
_IDENTITY = {"color": "#2e6fb7", "fontcolor": "#2e6fb7", "penwidth": "1.6"}  # dense connections
_GREY = "#555555"


@dataclass(frozen=True)
class Style:
    """Colours and lines of a drawing. Fill colours go by op family (`LayerDef.family`), in the spirit
    of torch.fx's _COLOR_MAP; an op of no family gets a pale colour hashed from its name, so no op is
    ever unstyled. `edges`: the attributes of each `DrawSpec.styles` name."""

    families: dict[str, str]
    module: str  # a folded block
    edges: dict[str, dict[str, str]]
    font: str = "Helvetica"
    grey: bool = False  # hashed colours are greys too

    def fill(self, op: str) -> tuple[str, str]:
        """The op's family (or its name, for an op of none) and its fill colour."""
        family = REGISTRY[op].family if op in REGISTRY else None
        if family in self.families:
            return family, self.families[family]
        digest = hashlib.sha1((family or op).encode()).digest()  # a pale colour of the op's own
        if self.grey:
            return family or op, "#" + f"{0xd0 + digest[0] % 0x28:02x}" * 3
        return family or op, "#" + "".join(f"{0xd8 + byte % 0x28:02x}" for byte in digest[:3])


# NOTE: [Paper style]
# `--style paper` prints in greyscale: fills are greys whose lightness alone tells the families apart
# (activation white, then norm, pool, folded block, conv and linear, each about 9% darker), and the
# edges differ by line, not hue (a residual shortcut bold, a dense connection dotted, a gate branch
# or a cell's extra input dashed). The legend, on in this style, names every fill and line used.
# Graphviz's PDF output (cairo) embeds the subset of the font it uses.
STYLES = {
    "screen": Style({"conv": "#cfe2f3", "linear": "#fce5cd", "norm": "#fff2cc", "pool": "#d9ead3",
                     "activation": "#eeeeee", "upsample": "#d0e0e3"}, "#e4dcf1",
                    {"skip": _SKIP, "identity": _IDENTITY, "dashed": {"style": "dashed"}, "plain": {}}),
    "paper": Style({"activation": "#ffffff", "norm": "#f0f0f0", "upsample": "#e4e4e4", "pool": "#d8d8d8",
                    "conv": "#bdbdbd", "linear": "#a6a6a6"}, "#cbcbcb",
                   {"skip": {"color": "#000000", "fontcolor": "#000000", "penwidth": "2.2"},
                    "identity": {"color": "#000000", "fontcolor": "#000000", "penwidth": "1.6", "style": "dotted"},
                    "dashed": {"style": "dashed", "color": "#000000"}, "plain": {}},
                   font="Helvetica", grey=True),
}


@dataclass(frozen=True)
class Port:
    """Where the current tensor comes from: a drawn node, and the tensor's shape in each instance
    (a fold draws one block for N copies; `shapes` then holds N shapes)."""

    node: str
    shapes: tuple[Shape, ...]


# ---- labels -----------------------------------------------------------------------------------

def _span(values: Iterable, show=str) -> str:
    """One value, or the range the copies of a fold cover ("64–224")."""
    values = list(values)
    low, high = min(values), max(values)
    return show(low) if low == high else f"{show(low)}–{show(high)}"


def shape_label(shapes: Sequence[Shape]) -> str:
    """`256×56×56`; where the copies of a fold differ, each differing dimension as a range."""
    return "×".join(_span(dims) for dims in zip(*shapes))


def _costs(nodes: Sequence) -> str:
    params, macs = [node.params for node in nodes], [node.macs for node in nodes]
    parts = [f"{_span(params, human)} params"] if max(params) else []
    if max(macs):
        parts.append(f"{_span(macs, human)} MACs")
    return " · ".join(parts)


def _small(text: str) -> str:
    return f'<font point-size="8" color="{_GREY}">{text}</font>' if text else ""


def _label(title: str, *lines: str) -> str:
    """An HTML-like Graphviz label: `title` (already escaped) over small grey lines. (A table, not
    `<br/>`: its rows are spaced by their own fonts, so an underscore never touches the next line.)"""
    rows = "".join(f"<tr><td>{text}</td></tr>" for text in [title, *map(_small, lines)] if text)
    return f'<<table border="0" cellborder="0" cellspacing="1" cellpadding="0">{rows}</table>>'


def _module_title(name: str, module: Module) -> str:
    """`<b>layer1</b> stage`: the module's (dotted) name and the block it instantiates."""
    kind = module.type_name if module.kind != "sequential" else ""  # groups and repetitions: no kind
    return " ".join(filter(None, (f"<b>{html.escape(name)}</b>", html.escape(kind) if kind != name else "")))


def _layer_title(layer: Layer) -> str:
    """`<b>conv1</b> conv 7×7 /2`; an unlabelled (numbered) layer, or one named after its op, says it once."""
    text = html.escape(_op_text(layer))
    if layer.name.isdigit() or layer.name == layer.op:
        return text
    return f"<b>{html.escape(layer.name)}</b> {text}"


def _dims(value) -> str:
    return "×".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _op_text(layer: Layer) -> str:
    """The op and the arguments a reader needs beyond the shapes: kernel, stride, dilation, groups."""
    args, parts = layer.args, [layer.op]
    if "kernel" in args:
        kernel = args["kernel"]
        parts.append(_dims(kernel) if isinstance(kernel, (tuple, list)) else f"{kernel}×{kernel}")
    if args.get("stride", 1) not in (1, (1, 1)):
        parts.append(f"/{_dims(args['stride'])}")
    if args.get("dilation", 1) not in (1, (1, 1)):
        parts.append(f"dilation {_dims(args['dilation'])}")
    groups = args.get("groups", 1)
    if groups != 1:
        parts.append("depthwise" if groups == layer.in_shape[0] else f"groups {groups}")
    return " ".join(parts)


def _composition(module: Module) -> str:
    """`36 × bottleneck` for a module that is a stack of one kind of block."""
    children = list(module.children())
    kinds = {child.type_name for child in children if child.walk_kind == "module"}
    if len(children) > 1 and len(kinds) == 1 and all(child.walk_kind == "module" for child in children):
        return f"{len(children)} × {kinds.pop()}"
    return ""


_NAMED_FAMILIES = ("conv", "linear", "pool", "upsample")  # what a folded block is said to be made of
MADE_OF_WIDTH, MADE_OF_LINES = 44, 3  # a folded block's "made of" text: characters a line, lines at most


def _brief(layer: Layer) -> str:
    """`3×3 conv`, `3×3 maxpool /2`, `3×3 conv dw`: a layer in a folded block's "made of" line."""
    args = layer.args
    kernel = args.get("kernel")
    text = layer.op if kernel is None else f"{_dims(kernel) if isinstance(kernel, (tuple, list)) else f'{kernel}×{kernel}'} {layer.op}"
    if args.get("stride", 1) not in (1, (1, 1)):
        text += f" /{_dims(args['stride'])}"
    if args.get("groups", 1) != 1 and args["groups"] == layer.in_shape[0]:
        text += " dw"
    return text


def _parts(nodes: Sequence[Node]) -> list[str]:
    """The weighted layers and pools of a chain, in order (norms and activations are implied): a
    child block as one part (in parentheses among others), parallel branches as `a | b`, a
    residual's body inline, a dense connection as `dense(...)` and a gate by its label."""
    parts: list[tuple[str, bool]] = []  # (text, a group that needs parentheses among others)
    for node in nodes:
        if node.walk_kind == "layer" and not node.shared and REGISTRY[node.op].family in _NAMED_FAMILIES:
            parts.append((_brief(node), False))
        elif node.walk_kind == "module":
            inner = _joined(_parts(node.body))
            parts.append((inner, _compound(inner)))
        elif node.walk_kind == "merge":
            combinator = COMBINATORS[node.kind]
            arms = [_joined(_parts(arm)) for index, arm in enumerate(node.arms) if index != combinator.input_arm]
            if combinator.training_output:
                continue
            if combinator.input_arm is not None:
                parts.append((f"{combinator.label}({arms[0]})" if combinator.draw.columns else combinator.label, False))
            elif combinator.draw.columns:
                parts.append((" | ".join(arms), len(arms) > 1))
            else:
                parts.extend((part, False) for part in _parts(node.arms[0]))  # a residual's body; the shortcut is implied
    parts = [(text, group) for text, group in parts if text]
    return [f"({text})" if group and len(parts) > 1 else text for text, group in parts]


def _compound(text: str) -> bool:
    """Whether `text` is a chain or branches outside any parentheses (and needs them among others)."""
    level = 0
    for character in text:
        level += {"(": 1, ")": -1}.get(character, 0)
        if level == 0 and character in "→|":
            return True
    return False


def _joined(parts: list[str]) -> str:
    """`3×3 conv ×2 → 1×1 conv`: consecutive repeats counted."""
    runs: list[list] = []
    for part in parts:
        if runs and runs[-1][0] == part:
            runs[-1][1] += 1
        else:
            runs.append([part, 1])
    return " → ".join(part if count == 1 else f"{part} ×{count}" for part, count in runs)


def made_of(module: Module) -> str:
    """What a folded block is made of: `1×1 conv → 3×3 conv`, an inception module's
    `1×1 conv | 1×1 conv → 3×3 conv | 1×1 conv → 5×5 conv | 3×3 maxpool → 1×1 conv`."""
    return _joined(_parts(module.body))


def _wrapped(text: str, width: int = MADE_OF_WIDTH, most: int = MADE_OF_LINES) -> list[str]:
    """`text` in lines of about `width` characters, broken between branches (after ` | `) where it
    can be, else after a ` → `; at most `most` lines, the last ending in "…" if more would follow."""
    lines: list[str] = []
    for branch in re.split(r"(?<= \|) ", text):
        for piece in re.split(r"(?<= →) ", branch) if len(branch) > width else [branch]:
            if lines and len(lines[-1]) + 1 + len(piece) <= width and (piece is branch or not lines[-1].endswith("|")):
                lines[-1] += f" {piece}"
            else:
                lines.append(piece)
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] += " …"
    return lines


def _run_names(first: str, last: str) -> str:
    """`denselayer1–6` for denselayer1..denselayer6, `1–35`, `Mixed_5c–Mixed_5d`."""
    head, tail = re.fullmatch(r"(.*?)(\d*)", first), re.fullmatch(r"(.*?)(\d*)", last)
    if head[1] == tail[1] and head[2] and tail[2]:
        return f"{first}–{tail[2]}"
    return f"{first}–{last}"


# ---- folding ----------------------------------------------------------------------------------

def _signature(node: Node) -> tuple:
    """What a drawing shows of a node: kind, names, ops and structural arguments. Not shapes (they
    follow from the input) nor float arguments (rates, eps, momentum), which it does not show."""
    return _SIGNATURES[node.walk_kind](node)


_SIGNATURES = {
    "layer": lambda node: ("layer", node.name, node.op, tuple(
        (key, value) for key, value in sorted(node.args.items()) if not isinstance(value, float))),
    "module": lambda node: ("module", node.name, fold_key(node)),
    "merge": lambda node: ("merge", node.kind, tuple(_structure(arm) for arm in node.arms)),
    "tap": lambda node: ("tap", node.wire.name),
    "from_": lambda node: ("from", node.wire.name),
}


def _structure(nodes: list[Node]) -> tuple:
    return tuple(_signature(node) for node in nodes)


def fold_key(module: Module) -> tuple:
    """Consecutive sibling modules fold into one `×N` drawing when these agree: the same block with
    the same structure inside. (A ResNet stage's first block strides and projects: it stays apart.)"""
    return (module.kind, module.type_name, len(module.inputs), _structure(module.body))


def _runs(body: list[Node]) -> Iterator[tuple[int, int]]:
    """[start, end) runs of `body`: consecutive foldable copies of a module, or single nodes."""
    start = 0
    while start < len(body):
        end = start + 1
        if body[start].walk_kind == "module" and not body[start].inputs:
            key = fold_key(body[start])
            while end < len(body) and body[end].walk_kind == "module" and fold_key(body[end]) == key:
                end += 1
        yield start, end
        start = end


# ---- the drawing ------------------------------------------------------------------------------

Copies = tuple  # the same node in each copy of a folded block (one element outside folds)


class _Total(NamedTuple):
    """The summed costs of one copy of a folded run, labelled like a node's."""

    params: int
    macs: int


@dataclass(frozen=True)
class Drawn:
    """What one drawn node or cluster stands for: its graph nodes (a fold's copies, a table's block
    and layers) and the module path a click unfolds (`expands`) or folds again (the live viewer's)."""

    nodes: tuple[Node, ...]
    toggle: str | None = None
    expands: bool = False


_EDGE_MEANINGS = {"skip": "{label} shortcut", "identity": "the input itself ({label})",
                  "dashed": "the {label} branch", "plain": ""}


class _Drawer:
    """Walks the graph once, adding nodes to nested Graphviz clusters and collecting the edges.
    Modules at `depth` and below are folded, except those whose path is in `expand`; those whose
    path is in `collapse` are folded at any depth."""

    def __init__(self, depth: int, paths: dict[int, str], expand: frozenset[str] = frozenset(),
                 collapse: frozenset[str] = frozenset(), style: Style = STYLES["screen"]) -> None:
        self.depth = depth
        self.style = style
        self.used: dict[tuple, set[str]] = {}  # legend entries: (kind, key, sample) → what they stand for
        self.paths = paths  # id(node) → dotted module path
        self.expand, self.collapse = expand, collapse
        self.items: dict[str, Drawn] = {}  # drawn node or cluster name → what it stands for
        self.chains: list[tuple[int, list[int]]] = []  # every chain drawn (see `body`), outermost first
        self.ids = 0
        self.lines: dict[str, int] = {}  # lines of text in each node, for the height estimate
        self.edges: list[tuple[str, str, dict]] = []
        self.labelled: set[tuple[str, str]] = set()  # (node, label): each tensor is labelled once
        self.wires: dict[int, Port] = {}

    def height(self) -> int:
        """Lines of text along the tallest path from the input (a node's lines, and one for the shape
        on the edge into it): how tall the drawing is, or how wide with LR."""
        return max(self.bottoms().values(), default=0)

    def bottoms(self) -> dict[str, int]:
        """For each node, the lines of text along the tallest path from the input to its bottom."""
        before: dict[str, set[str]] = {}
        for tail, head, _ in self.edges:
            before.setdefault(head, set()).add(tail)
        tallest: dict[str, int] = {}
        for node in TopologicalSorter(before).static_order():
            tallest[node] = self.lines.get(node, 1) + 1 + max((tallest[t] for t in before.get(node, ())), default=0)
        return tallest

    def note(self, kind: str, key: str, sample: str, meaning: str) -> None:
        """Something the legend explains: a fill, a shape, an edge style or a join symbol."""
        self.used.setdefault((kind, key, sample), set()).add(meaning)

    def fill(self, op: str) -> str:
        family, colour = self.style.fill(op)
        self.note("fill", family, colour, op)
        return colour

    def edge_style(self, name: str, meaning: str) -> dict[str, str]:
        """The attributes of a `DrawSpec.styles` name, noted for the legend (plain edges are not)."""
        if name != "plain":
            self.note("edge", name, name, meaning)
        return self.style.edges[name]

    def _id(self, prefix: str = "n") -> str:
        self.ids += 1
        return f"{prefix}{self.ids}"

    def folded(self, module: Module, level: int) -> bool:
        path = self.paths.get(id(module))
        return path in self.collapse or (level >= self.depth and path not in self.expand)

    def record(self, name: str, nodes: Iterable[Node], toggle: Module | None = None, expands: bool = False) -> None:
        self.items[name] = Drawn(tuple(nodes), self.paths.get(id(toggle)) if toggle is not None else None, expands)

    def node(self, container, label: str, stands_for: Iterable[Node] = (), **attrs) -> str:
        name = self._id()
        container.node(name, label=label, **attrs)
        if stands_for:
            self.record(name, stands_for)
        # a point (a cluster's way in) stands for the cluster's title; table labels have a row per line
        self.lines[name] = 2 if attrs.get("shape") == "point" else max(1, label.count("<tr>"))
        return name

    def edge(self, port: Port, head: str, always: bool = False, **attrs) -> None:
        """An edge carrying `port`'s tensor, its shape written on the first edge leaving the port
        (and, `always`, on skip and dense connections too)."""
        label = shape_label(port.shapes)
        shown = always or (port.node, label) not in self.labelled
        self.labelled.add((port.node, label))
        self.edges.append((port.node, head, {"label": label if shown else "", **attrs}))

    def join(self, container, symbol: str, tooltip: str, stands_for: Iterable[Node] = ()) -> str:
        """A small round node where tensors meet: + (add), × (gate), ‖ (concatenate)."""
        return self.node(container, symbol, stands_for, shape="circle", width="0.28", height="0.28", fixedsize="true",
                         fontsize="12", style="filled", fillcolor="white", tooltip=tooltip)

    @contextmanager
    def cluster(self, container, label: str, style: str = "rounded", stands_for: Sequence[Module] = ()
                ) -> Iterator[tuple[object, str]]:
        name = self._id("cluster_")
        if stands_for:
            self.record(name, stands_for, stands_for[0])
        with container.subgraph(name=name, graph_attr={"label": label, "labeljust": "l", "style": style,
                                                       "color": "#999999", "margin": "5"}) as inner:
            yield inner, name

    def enter(self, cluster, name: str, port: Port, shapes: tuple[Shape, ...]) -> Port:
        """A point just inside a cluster's top where its input arrives. The edge to it stops at the
        cluster's border (`lhead`), so no edge crosses the cluster's label."""
        point = self.node(cluster, "", shape="point", width="0.05", color=_GREY)
        self.edge(port, point, lhead=name)
        if shape_label(shapes) == shape_label(port.shapes):
            self.labelled.add((point, shape_label(shapes)))  # already written on the edge in
        return Port(point, shapes)

    # A body is drawn as a list of rows; a row holds the same node in every copy of a fold.
    def body(self, container, rows: Iterable[Copies], port: Port, level: int) -> Port:
        rows = list(rows)
        chain = (self.ids, [])  # for --columns: the id before the chain, and the last id of each item
        self.chains.append(chain)
        for start, end in _runs([row[0] for row in rows]):
            if end - start > 1:
                port = self.fold(container, rows[start:end], port, level)
            else:
                port = self.item(container, rows[start], port, level)
            chain[1].append(self.ids)
        return port

    def item(self, container, nodes: Copies, port: Port, level: int) -> Port:
        return getattr(self, nodes[0].walk_kind)(container, nodes, port, level)

    def tap(self, container, taps: Copies, port: Port, level: int) -> Port:
        self.wires[taps[0].wire.key] = port
        return port

    def from_(self, container, froms: Copies, port: Port, level: int) -> Port:
        return self.wires.get(froms[0].wire.key, port)  # continue from the named tensor

    def layer(self, container, layers: Copies, port: Port, level: int = 0) -> Port:
        first = layers[0]
        label = _label(_layer_title(first), _costs(layers))
        name = self.node(container, label, layers, fillcolor=self.fill(first.op))
        self.edge(port, name)
        return Port(name, tuple(layer.out_shape for layer in layers))

    def module(self, container, modules: Copies, port: Port, level: int, path: str = "") -> Port:
        """A node (below `depth`), a table (a block of layers only) or a cluster of its body. `path`:
        the names of enclosing modules that held nothing but this one, drawn as part of its title."""
        first = modules[0]
        title = _module_title(f"{path}{first.name}", first)
        out_shapes = tuple(module.out_shape for module in modules)
        if self.folded(first, level):
            lines = _wrapped(made_of(first))  # its kernels, or "36 × bottleneck" when they take lines
            if len(lines) > 1 and _composition(first):
                lines = [_composition(first)]
            name = self.node(container, _label(title, *map(html.escape, lines), _costs(modules)),
                             fillcolor=self.style.module)
            self.note("fill", "", self.style.module, "a block, folded")
            self.record(name, modules, first if first.body else None, expands=True)
            self.edge(port, name)
            for wire in first.inputs:  # a block's extra tensor arguments (NASNet's cells)
                if wire.key in self.wires:
                    self.edge(self.wires[wire.key], name, **self.edge_style("dashed", "an extra input of a block (an earlier tensor)"))
            return Port(name, out_shapes)
        rows = list(zip(*(module.body for module in modules)))
        if all(node.walk_kind == "layer" for node in first.body):
            return self.table(container, rows, port, f"{title} {_small(_costs(modules))}", modules)
        if first.body[0].walk_kind == "module" and len(list(_runs(first.body))) == 1 and not first.parameters:
            # a lone child, or one folded run of children: drawn without a cluster around it
            inner_path = f"{path}{first.name}."
            if len(rows) == 1:
                return self.module(container, rows[0], port, level + 1, inner_path)
            return self.fold(container, rows, port, level + 1, inner_path)
        for inner, outer in zip(first.parameters, first.inputs):
            if outer.key in self.wires:
                self.wires[inner.key] = self.wires[outer.key]
        with self.cluster(container, f"<{title} {_small(_costs(modules))}>", stands_for=modules) as (inner, name):
            entry = self.enter(inner, name, port, port.shapes)
            out = self.body(inner, rows, entry, level + 1)
        return Port(out.node, out_shapes)

    def table(self, container, rows: Sequence[Copies], port: Port, header: str = "",
              modules: Sequence[Module] = ()) -> Port:
        """A chain made only of layers, as one node listing them with their output shapes and costs
        (a conv-bn-relu block as three rows rather than three boxes); `modules`: the block(s) it draws."""
        lines = [f'<tr><td align="left" colspan="3">{header}</td></tr>'] if header else []
        for layers in rows:
            first = layers[0]
            lines.append(f'<tr><td align="left" bgcolor="{self.fill(first.op)}">{_layer_title(first)}</td>'
                         f'<td align="left">{_small(shape_label([layer.out_shape for layer in layers]))}</td>'
                         f'<td align="left">{_small(_costs(layers))}</td></tr>')
        label = f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="2">{"".join(lines)}</table>>'
        name = self.node(container, label, fillcolor="white", margin="0.04,0.02")
        self.record(name, [*modules, *(row[0] for row in rows)], modules[0] if modules else None)
        self.edge(port, name)
        return Port(name, tuple(layer.out_shape for layer in rows[-1]) if rows else port.shapes)

    def arm(self, container, rows: Sequence[Copies], port: Port, level: int) -> Port:
        """One arm of a residual, branch or gate: a table when it is two or more layers and nothing else."""
        rows = list(rows)
        if len(rows) > 1 and all(row[0].walk_kind == "layer" for row in rows):
            return self.table(container, rows, port)
        return self.body(container, rows, port, level)

    def fold(self, container, rows: Sequence[Copies], port: Port, level: int, path: str = "") -> Port:
        """Consecutive copies of one block: a node `first–last kind ×N`, or a cluster drawing one."""
        first, last, count = rows[0][0], rows[-1][0], len(rows)
        per_copy = range(len(rows[0]))
        totals = [_Total(sum(row[i].params for row in rows), sum(row[i].macs for row in rows)) for i in per_copy]
        title = f"{_module_title(path + _run_names(first.name, last.name), first)} <b>×{count}</b>"
        out_shapes = tuple(module.out_shape for module in rows[-1])
        copies = [module for row in rows for module in row]
        if self.folded(first, level):
            name = self.node(container, _label(title, *map(html.escape, _wrapped(made_of(first))), _costs(totals)),
                             fillcolor=self.style.module, shape="box3d", style="filled")
            self.note("shape", "box3d", self.style.module, "consecutive copies of a block, drawn once: ×N")
            self.record(name, copies, first, expands=True)
            self.edge(port, name)
            return Port(name, out_shapes)
        inside = list(zip(*(module.body for module in copies)))
        note = _small(f"{_costs(totals)} in all; one drawn" if _costs(totals) else "one drawn")
        if all(node.walk_kind == "layer" for node in first.body):
            out = self.table(container, inside, port, f"{title} {note}", copies)
        else:
            self.note("shape", "copies", "dashed", "consecutive copies of a block, one drawn inside")
            with self.cluster(container, f"<{title} {note}>", style="rounded,dashed", stands_for=copies) as (inner, name):
                entry = self.enter(inner, name, port, tuple(module.in_shape for module in copies))
                out = self.body(inner, inside, entry, level + 1)
        return Port(out.node, out_shapes)

    def merge(self, container, merges: Copies, port: Port, level: int) -> Port:
        """A combinator as its `DrawSpec` says: each arm from the input (side by side in columns for
        parallel branches) into a round join node; an empty arm is an edge straight from the input."""
        first = merges[0]
        spec = COMBINATORS[first.kind].draw
        if spec.symbol is None:
            self.side_output(container, merges, port, level)
            return port
        ends = []
        for index, arm in enumerate(first.arms):
            style = (spec.styles[index] if index < len(spec.styles) else None) or ("plain" if arm else "identity")
            attrs = self.edge_style(style, _EDGE_MEANINGS[style].format(label=COMBINATORS[first.kind].label))
            if not arm:  # the input itself: a residual's identity, DenseNet's dense connection
                ends.append((port, attrs))
                continue
            rows = list(zip(*(m.arms[index] for m in merges)))
            if spec.columns:
                with self.cluster(container, "", style="invis") as (column, _):  # keeps a branch in a column
                    ends.append((self.arm(column, rows, port, level), attrs))
                continue
            mark = len(self.edges)
            end = self.arm(container, rows, port, level)
            if "color" in attrs:  # a highlighted arm: its way in too (a residual's projection)
                self.edges[mark] = (*self.edges[mark][:2], {**self.edges[mark][2], **attrs})
            ends.append((end, attrs))
        join = self.join(container, spec.symbol, spec.tooltip, merges)
        self.note("join", spec.symbol, spec.symbol, spec.tooltip)
        for end, attrs in ends:
            self.edge(end, join, always="color" in attrs, **attrs)
        return Port(join, tuple(m.out_shape for m in merges))

    def side_output(self, container, merges: Copies, port: Port, level: int) -> None:
        """An auxiliary head: a side branch ending in its own (training-time) output."""
        rows = list(zip(*(m.arms[0] for m in merges)))
        head = self.arm(container, rows, port, level)
        names = [node.name for node in merges[0].arms[0] if node.walk_kind in ("layer", "module")]
        terminal = self.node(container, html.escape(f"{names[-1] if names else merges[0].kind} output (training)"),
                             merges, shape="box", style="rounded,dashed")
        self.edge(head, terminal, **self.edge_style("dashed", "an auxiliary head's output (training only)"))


def _levels(nodes: list[Node]) -> int:
    """How many levels of modules are nested in `nodes` (0 for a body of layers)."""
    holder = Module("", "sequential", "", nodes, (), (), None)
    return max((depth for _, node, depth in walk(holder) if node.walk_kind == "module"), default=0)


@dataclass(frozen=True)
class Layout:
    """How a figure is laid out, besides its depth: direction, colours, a legend, and columns (rows
    with LR) that the network's top-level chain is wrapped into."""

    rankdir: str = "TB"
    style: str = "screen"
    legend: bool | None = None  # None: in the paper style only
    columns: int = 1

    @property
    def shows_legend(self) -> bool:
        return self.style == "paper" if self.legend is None else self.legend


def to_dot(network: Network, depth: int | None = None, rankdir: str = "TB", layout: Layout | None = None):
    """The network as a `graphviz.Digraph`, modules expanded down to `depth` (default: see NOTE)."""
    return drawing(network, depth, layout=layout or Layout(rankdir))[0]


def drawing(network: Network, depth: int | None = None, expand: Iterable[str] = (), collapse: Iterable[str] = (),
            layout: Layout = Layout()) -> tuple[graphviz.Digraph, dict[str, Drawn]]:
    """The Digraph, and what each of its nodes and clusters stands for: modules folded below `depth`
    (default: see NOTE), except the module paths in `expand`; those in `collapse` folded too."""
    depth = default_depth(network) if depth is None else depth
    dot, drawer = _build(network, depth, layout, frozenset(expand), frozenset(collapse))
    return dot, drawer.items


def default_depth(network: Network) -> int:
    """The deepest uniform depth whose drawing is at most HEIGHT_BUDGET boxes tall (at least 1)."""
    best = 1
    for depth in range(2, _levels(network.root.body) + 2):  # depth = levels + 1 expands everything
        if _build(network, depth, Layout())[1].height() > HEIGHT_BUDGET:
            break
        best = depth
    return best


def _build(network: Network, depth: int, layout: Layout, expand: frozenset[str] = frozenset(),
           collapse: frozenset[str] = frozenset()):
    """The Digraph, and the drawer that made it (which knows its edges, height and items)."""
    style = STYLES[layout.style]
    dot = graphviz.Digraph(network.name)
    title = f"<b>{html.escape(network.name)}</b> {html.escape(Path(network.file).name)}"
    dot.attr(rankdir=layout.rankdir, compound="true", nodesep="0.15", ranksep="0.12", fontname=style.font,
             fontsize="11", labelloc="t", label=_label(title, f"{human(network.params)} params · "
                                                              f"{human(network.macs)} MACs · depth {depth}"))
    dot.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname=style.font, fontsize="10",
             height="0.3", margin="0.08,0.03")
    dot.attr("edge", fontname=style.font, fontsize="8", fontcolor=_GREY, color=_GREY, arrowsize="0.6")
    drawer = _Drawer(depth, {id(node): path for path, node, _ in walk(network.root)}, expand, collapse, style)
    dot.node("input", label="input", shape="ellipse", style="filled", fillcolor="#f3f3f3")
    out = drawer.body(dot, [(node,) for node in network.root.body], Port("input", (network.input_shape,)), 1)
    dot.node("output", label="output", shape="ellipse", style="filled", fillcolor="#f3f3f3")
    drawer.edge(out, "output")
    if layout.columns > 1:
        _wrap(dot, drawer, layout.columns)
    for tail, head, attrs in drawer.edges:
        dot.edge(tail, head, **attrs)
    if layout.shows_legend:
        with dot.subgraph(name="legend_rank") as bottom:
            bottom.attr(rank="sink")
            bottom.node("legend", label=_legend(drawer, style), shape="plaintext", style="", margin="0")
    return dot, drawer


# NOTE: [Columns]
# `--columns N` cuts one chain between two of its items (never inside a block) where the tallest path
# has reached about 1/N, 2/N, ... of the drawing's height. The chain is the outermost one that spans
# most of the height and whose tallest item is the smallest share of it: ResNet's top level (stem,
# four stages, head), but EfficientNet's `features`, which holds nearly all of it. Each cut edge stops
# constraining the ranks (`constraint=false`) and the first node after it is put on the chain's first
# rank (`newrank`, so that this holds across clusters): the chain goes on at the top of the next
# column, and the cut edge runs from the bottom of one column to the top of the next.

def _number(name: str) -> int:
    """The drawing order of a node: its id (`n12`: 12), the input first and the output last."""
    if name[1:].isdigit():
        return int(name[1:])
    return 0 if name == "input" else 1 << 60


def _wrap(dot, drawer: _Drawer, columns: int) -> None:
    """Wraps the tallest chain of the drawing into `columns` columns (see NOTE [Columns])."""
    bottoms = drawer.bottoms()
    height = max(bottoms.values(), default=0)
    nodes = sorted(_number(name) for name in drawer.lines)

    def reached(first: int, marks: list[int]) -> list[int]:
        """The tallest path's length once each item of a chain is drawn."""
        found, start = [], first
        for mark in marks:
            found.append(max([found[-1] if found else 0] + [bottoms.get(f"n{n}", 0) for n in range(start + 1, mark + 1)]))
            start = mark
        return found

    def top(chain) -> int:
        return min((bottoms.get(f"n{n}", 0) for n in nodes if n > chain[0]), default=0)

    def span(chain) -> int:
        """How much of the height a chain covers, from its first node's bottom to its end."""
        return reached(*chain)[-1] - top(chain)

    def tallest_share(chain) -> float:
        ends = [top(chain)] + reached(*chain)
        return max(b - a for a, b in zip(ends, ends[1:])) / max(height, 1)

    candidates = [chain for chain in drawer.chains if len(chain[1]) >= columns and span(chain) >= height / 2]
    if not candidates:
        return
    first, marks = min(candidates, key=tallest_share)
    ends = reached(first, marks)[:-1]
    cuts: list[int] = []
    for column in range(1, columns):  # the item ending nearest to column/columns of the height
        choices = [index for index in range(len(ends)) if not cuts or index > cuts[-1]]
        if not choices:
            break
        cuts.append(min(choices, key=lambda index: abs(ends[index] - height * column / columns)))
    tops = ["input" if first == 0 else f"n{min(n for n in nodes if n > first)}"]
    for cut in (marks[index] for index in cuts):
        for index, (tail, head, attrs) in enumerate(drawer.edges):
            if _number(tail) <= cut < _number(head):
                label = attrs.get("label", "")
                drawer.edges[index] = (tail, head, {**attrs, "constraint": "false", "label": "", "taillabel": label})
        tops.append(f"n{min(n for n in nodes if n > cut)}")
    if len(tops) > 1:
        dot.attr(newrank="true")
        with dot.subgraph() as top:
            top.attr(rank="same")
            for name in tops:
                top.node(name)


_LEGEND_ORDER = ("fill", "shape", "join", "edge")


def _legend(drawer: _Drawer, style: Style) -> str:
    """A table naming every fill, shape, edge style and join symbol the drawing uses."""
    samples = {"skip": "━━━", "identity": "· · · ·" if style.edges["identity"].get("style") == "dotted" else "━━━",
               "dashed": "- - -"}
    rows = []
    for (kind, key, sample), meanings in sorted(drawer.used.items(), key=lambda entry: _LEGEND_ORDER.index(entry[0][0])):
        text = html.escape(", ".join(sorted(meanings)))
        if kind == "fill":  # an op family (named, with its ops), or the folded block's fill (no name)
            rows.append((f'<td bgcolor="{sample}" border="1" width="24"> </td>',
                         f"<b>{html.escape(key)}</b> {text}" if key else text))
        elif kind == "shape":
            cell = (f'<td bgcolor="{sample}" border="1"><b>×N</b></td>' if sample != "dashed" else
                    '<td border="1" style="dashed">1</td>')
            rows.append((cell, text))
        elif kind == "join":
            rows.append((f"<td>{html.escape(key)}</td>", text))
        else:
            attrs = style.edges[key]
            colour = attrs.get("color", _GREY)
            rows.append((f'<td><font color="{colour}">{samples[key]}</font></td>', text))
    body = "".join(f'<tr>{cell}<td align="left">{text}</td></tr>' for cell, text in rows)
    return (f'<<table border="1" color="#999999" cellborder="0" cellspacing="2" cellpadding="1">'
            f'<tr><td colspan="2" align="left"><b>legend</b></td></tr>{body}</table>>')


# ---- rendering ----------------------------------------------------------------------------------

class GraphvizMissing(OptionError):
    """The Graphviz program `dot`, which renders SVG, PNG and PDF, is not installed."""


def output_format(target: str | os.PathLike) -> str | None:
    """The `dot -T` format for the file `target` by its suffix (None: .dot, the source itself);
    an `OptionError` for a suffix that is not in FORMATS."""
    suffix = Path(target).suffix.lower()
    if suffix not in FORMATS:
        raise OptionError(f"cannot draw to '{suffix or 'a file without a suffix'}'; use {', '.join(FORMATS)}")
    return FORMATS[suffix]


def parse_size(text: str) -> tuple[float, float]:
    """`--size`: a name in SIZES or `WIDTHxHEIGHT` in inches (`3.5x6`); `OptionError` otherwise."""
    if text in SIZES:
        return SIZES[text]
    match = re.fullmatch(r"(\d+(?:\.\d+)?)[x×](\d+(?:\.\d+)?)", text.strip())
    if match is None or not all(0 < float(value) <= 200 for value in match.groups()):
        raise OptionError(f"size '{text}' is not {', '.join(SIZES)} or WIDTHxHEIGHT in inches (e.g. 3.5x6)")
    return float(match[1]), float(match[2])


def fit(dot: graphviz.Digraph, size: tuple[float, float]) -> None:
    """Shrink the drawing, if it is larger, to fit `size` (inches), keeping its proportions."""
    dot.attr(size=f"{size[0]:g},{size[1]:g}")


def render(dot: graphviz.Digraph, target: str | os.PathLike, dpi: int = PNG_DPI) -> bytes:
    """The content of the file `target`, by its suffix: the DOT source for .dot, else what `dot`
    renders (PNG at `dpi` dots per inch). `OptionError` for another suffix, `GraphvizMissing`
    when `dot` is not installed."""
    format = output_format(target)
    if format is None:
        return dot.source.encode("utf-8")
    return image(dot, format, dpi)


def image(dot: graphviz.Digraph, format: str, dpi: int = PNG_DPI) -> bytes:
    """What `dot -T<format>` makes of the diagram (PNG at `dpi` dots per inch); `GraphvizMissing`
    when `dot` is not installed."""
    if format == "png":
        dot.attr(dpi=str(dpi))
    try:
        if shutil.which("dot") is None:
            raise graphviz.ExecutableNotFound(["dot"])
        return dot.pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing("the Graphviz program 'dot' is not installed", hint=INSTALL_HINT) from None
