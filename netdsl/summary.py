"""`netdsl summary` and `netdsl diff`: checked network + cost model → tables (rich) or JSON.

Reads the numbers `netdsl.cost` attaches to the checker's graph and never recomputes them.
A summary lists every node in dataflow order, indented by nesting and folded by module depth,
for one sample or a batch, with a training step's columns and totals under `--train`; a diff
sets two networks' modules side by side, matched by their dotted names. `grid` is the one table
style every report uses (`compile`'s overview and `sweep`'s table too).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from .cost import PEAK_EXCLUDES, Cost, Costs, Field, analyse, byte_size
from .roofline import NO_BOUND, Bound, Roofline
from .combinators import COMBINATORS
from .graph import Network, Node, walk
from .text import gib_text, human, shape_text, byte_text
from .values import show

DEFAULT_DEPTH = 2


@dataclass(frozen=True)
class Row:
    path: str  # dotted module path ("" for a combinator: its layers belong to the enclosing module)
    name: str
    kind: str  # the op, the block's name, or the combinator
    level: int  # indentation: enclosing modules and combinators
    depth: int  # enclosing modules (the root's children: 1); what --depth folds by
    folded: bool  # a module whose contents are not listed: its row shows their totals
    cost: Cost
    node: Node | None = None  # the graph node (None for the input)


def rows(network: Network, costs: Costs, max_depth: int) -> list[Row]:
    """The network's nodes in dataflow order, modules deeper than `max_depth` folded into their row."""
    found: list[Row] = []
    _collect(network.root.body, costs, "", 0, 1, max_depth, found)
    return found


def input_row(network: Network, costs: Costs) -> Row:
    """The input as a row, as the course notes' tables start."""
    elements = costs.totals.input_elements
    return Row("input", "input", "input", 0, 0, False, Cost(
        out_shape=network.input_shape, params=0, biases=0, macs=0, elements=elements, activations=0,
        field=costs.input_field, depth=0, layers_deep=0))


def _collect(nodes: list[Node], costs: Costs, prefix: str, level: int, depth: int, max_depth: int,
             found: list[Row], kind_prefix: str = "") -> None:
    for node in nodes:
        _ROWS[node.walk_kind](node, costs, prefix, level, depth, max_depth, found, kind_prefix)


def _layer_row(node, costs, prefix, level, depth, max_depth, found, kind_prefix) -> None:
    kind = f"{node.op} (reused)" if node.shared else node.op
    # an unlabelled parameter-free layer is shown by what it is, "(flatten)", not by its position
    name = node.name if node.labelled or node.params else ""
    found.append(Row(f"{prefix}{node.name}", name, kind_prefix + kind, level, depth, False, costs[node], node))


def _module_row(node, costs, prefix, level, depth, max_depth, found, kind_prefix) -> None:
    folded = depth >= max_depth and bool(node.body)
    found.append(Row(f"{prefix}{node.name}", node.name, kind_prefix + node.type_name, level, depth, folded,
                     costs[node], node))
    if not folded:
        _collect(node.body, costs, f"{prefix}{node.name}.", level + 1, depth + 1, max_depth, found)


def _merge_row(node, costs, prefix, level, depth, max_depth, found, kind_prefix) -> None:
    combinator = COMBINATORS[node.kind]
    if combinator.passthrough:  # a side computation (an auxiliary head): its contents, as the main path's
        for arm in node.arms:
            _collect(arm, costs, prefix, level, depth, max_depth, found, f"{combinator.label}: ")
        return
    found.append(Row("", "", combinator.label, level, depth, False, costs[node], node))
    for arm in node.arms:
        _collect(arm, costs, prefix, level + 1, depth, max_depth, found)


def _marker_row(kind: str):
    def row(node, costs, prefix, level, depth, max_depth, found, kind_prefix) -> None:
        found.append(Row("", node.wire.name, kind, level, depth, False, costs[node], node))
    return row


_ROWS = {"layer": _layer_row, "module": _module_row, "merge": _merge_row, "tap": _marker_row("tap"),
         "from_": _marker_row("from")}


# ---- formatting -----------------------------------------------------------------------------

def _shown(row: Row) -> str:
    """A row's name in a table: its label, or what it is, "(flatten)", where the author named it not."""
    return row.name or f"({row.kind})"


def field_text(field: Field | None) -> str:
    """`212`, `23x29` (height x width), `all` (the whole input), `851*` (also the whole input, see the note)."""
    if field is None:
        return ""
    if field.axes is None:
        return "all" if field.whole else ""
    height, width = field.size
    text = str(height) if height == width else f"{height}x{width}"
    return f"{text}*" if field.whole else text


WHOLE_NOTE = ("* also the whole input: a path through a global pooling (a linear layer, or a squeeze-excitation "
              "gate) reaches every input position; the number is the extent through the other paths")


@dataclass(frozen=True)
class View:
    """How a summary shows the numbers: inference memory at `dtype`, everything for a batch of
    `batch` (the output column shows it when `batched`), and with `train` a training step's
    columns and totals for `optimizer`, the largest batch fitting `capacity` bytes when given."""

    dtype: str = "float32"
    batch: int = 1
    batched: bool = False
    no_biases: bool = False
    train: bool = False
    optimizer: str = "adam"
    capacity: int | None = None
    capacity_name: str | None = None  # what the user wrote for it (`h100`, `80GiB`)
    bound: Roofline | None = None  # `--bound PROFILE`: every node's latency bound (netdsl/roofline.py)


def row_json(row: Row, view: View) -> dict:
    cost, batch = row.cost, view.batch
    report = {
        "path": row.path, "name": row.name, "type": row.kind, "level": row.level, "depth": row.depth,
        "folded": row.folded, "output": list(cost.out_shape), "params": cost.params,
        "params_without_biases": cost.weights, "macs": batch * cost.macs,
        "memory": {"elements": batch * cost.elements, "bytes": byte_size(batch * cost.elements, view.dtype)},
        "activations": batch * cost.activations, "receptive_field": cost.field.to_json() if cost.field else None,
        "layers_deep": cost.layers_deep,
    }
    if view.train:
        report.update(saved_bytes=cost.saved.at(batch), backward_macs=batch * cost.backward_macs)
    if view.bound is not None:
        report["bound"] = view.bound[row.node].to_json() if row.node is not None else None
    return report


def summary_json(network: Network, costs: Costs, listed: list[Row], view: View, max_depth: int) -> dict:
    totals, feature, batch = costs.totals, costs.feature_map, view.batch
    report = {
        "network": network.name, "file": network.file, "input": list(network.input_shape),
        "output": list(network.output_shape), "dtype": view.dtype, "batch": batch, "fold_depth": max_depth,
        "rows": [row_json(row, view) for row in listed],
        "totals": {
            "params": totals.params, "params_without_biases": totals.weights, "trainable": totals.params,
            "macs": batch * totals.macs, "flops": batch * totals.flops, "aux_macs": batch * totals.aux_macs,
            "activation_memory": {"elements": batch * totals.activations,
                                  "bytes": byte_size(batch * totals.activations, view.dtype)},
            "input": {"elements": batch * totals.input_elements,
                      "bytes": byte_size(batch * totals.input_elements, view.dtype)},
            "params_bytes": byte_size(totals.params, view.dtype), "layers_deep": totals.depth,
            "receptive_field": None if feature is None else feature.to_json(),
        },
    }
    if view.train:
        report["training"] = costs.training.to_json(batch, view.optimizer, view.capacity)
    if view.bound is not None:
        report["bound"] = view.bound.to_json()
    return report


def _console(table=None):
    """A console that never truncates: as wide as the table needs, plain text when not a terminal."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(markup=False, highlight=False, emoji=False)
    if table is not None:
        wide = Console(markup=False, width=100_000)
        needed = Measurement.get(wide, wide.options, table).maximum
        console = Console(markup=False, highlight=False, emoji=False, width=max(needed, 20))
    return console


def _table(columns: list[tuple[str, str]]):
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for title, justify in columns:
        table.add_column(title, justify=justify, no_wrap=True)
    return table


def _numbers(row: Row) -> bool:
    return row.kind not in ("tap", "from")  # a named tensor's row shows its shape only


# The summary's columns: (title, justify, cell). One renderer (`table_text`) draws every table of
# rows — `summary`'s and `compile`'s overview — from these.
COLUMNS = {
    "layer": ("layer", "left", lambda row, view: "  " * row.level + _shown(row)
              + (" ..." if row.folded else "")),
    "type": ("type", "left", lambda row, view: "" if not row.name or row.kind == "input" else row.kind),
    "output": ("output", "left", lambda row, view: shape_text(((view.batch,) if view.batched else ())
                                                             + tuple(row.cost.out_shape))),
    "params": ("params", "right", lambda row, view: _count(row.cost.weights if view.no_biases else row.cost.params)
               if _numbers(row) else ""),
    "MACs": ("MACs", "right", lambda row, view: human(view.batch * row.cost.macs) if row.cost.macs else ""),
    "memory": ("memory", "right", lambda row, view: byte_text(byte_size(view.batch * row.cost.elements, view.dtype))
               if _numbers(row) else ""),
    "saved": ("saved", "right", lambda row, view: byte_text(row.cost.saved.at(view.batch))
              if row.cost.saved.at(view.batch) else ""),
    "backward MACs": ("backward MACs", "right", lambda row, view: human(view.batch * row.cost.backward_macs)
                      if row.cost.backward_macs else ""),
    "RF": ("RF", "right", lambda row, view: field_text(row.cost.field)),
    "FLOPs": ("FLOPs", "right", lambda row, view: human(_bound(row, view).flops) if _bound(row, view).flops else ""),
    "bytes": ("bytes", "right", lambda row, view: byte_text(_bound(row, view).bytes) if _bound(row, view).bytes else ""),
    "FLOP/B": ("FLOP/B", "right", lambda row, view: _intensity_text(_bound(row, view).intensity)),
    "bound": ("bound", "right", lambda row, view: seconds_text(_bound(row, view).seconds)
              if _bound(row, view).seconds else ""),
    "bound by": ("bound by", "left", lambda row, view: _bound(row, view).limit or ""),
}


def _bound(row: Row, view: View) -> Bound:
    return view.bound[row.node] if row.node is not None else NO_BOUND


def _intensity_text(intensity: float | None) -> str:
    if intensity is None:
        return ""
    if intensity == 0:
        return "0"
    return f"{intensity:.2f}" if intensity < 10 else f"{intensity:.0f}"


def seconds_text(seconds: float) -> str:
    """`12.3 µs`, `4.56 ms`, `1.23 s`: a duration with three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            break
    return f"{f'{seconds / scale:#.3g}'.rstrip('.')} {unit}"


def _count(value: int) -> str:
    return f"{value:,}" if value else ""


def summary_columns(view: View) -> list[str]:
    """The summary's columns for `view`."""
    names = ["layer", "type", "output", "params", "MACs", "memory"]
    names += ["saved", "backward MACs"] if view.train else []
    names += ["FLOPs", "bytes", "FLOP/B", "bound", "bound by"] if view.bound is not None else []
    return names + ["RF"]


def table_text(listed: list[Row], names: list[str], view: View) -> str:
    """The rows as a table of the named columns (plain text when not a terminal, never truncated)."""
    return grid([(("params (no biases)" if name == "params" and view.no_biases else COLUMNS[name][0]),
                  COLUMNS[name][1]) for name in names],
                [[COLUMNS[name][2](row, view) for name in names] for row in listed])


def grid(columns: list[tuple[str, str]], cells: list[list[str]]) -> str:
    """The one table style of netdsl's reports: `columns` (title, justify) over rows of `cells`."""
    table = _table(columns)
    for row in cells:
        table.add_row(*row)
    return _rendered(table)


def _rendered(table) -> str:
    """A rich table as plain lines, without the padding rich leaves at their ends."""
    console = _console(table)
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().rstrip("\n").splitlines())


def overview(network: Network, costs: Costs) -> str:
    """`compile`'s one screen: the network's top-level modules, in the summary's style."""
    listed = [input_row(network, costs)] + rows(network, costs, 1)
    return "\n".join([f"network {network.name} ({network.file})",
                      table_text(listed, ["layer", "type", "output", "params"], View()),
                      f"total: {network.params:,} parameters, {human(network.macs)} MACs per sample"
                      f"{aux_text(network)}"])


def aux_text(network: Network) -> str:
    """`; auxiliary heads: 8.37 M MACs more in training` where the network has heads."""
    return f"; auxiliary heads: {human(network.aux_macs)} MACs more in training" if network.aux_macs else ""


def one_line(network: Network, costs: Costs, view: View) -> str:
    """`summary --depth 0`: the totals in one line."""
    totals, batch = costs.totals, view.batch
    per = f"batch {batch}" if view.batched else "per sample"
    text = (f"{network.name}: {shape_text(network.input_shape)} -> {shape_text(network.output_shape)}, "
            f"{totals.params:,} params, {human(batch * totals.macs)} MACs, activations "
            f"{byte_text(byte_size(batch * totals.activations, view.dtype))} at {view.dtype} ({per})")
    if view.train:
        training = costs.training
        text += (f"; training at batch {batch}, {training.precision.label}, {view.optimizer}: peak "
                 f"{byte_text(training.memory(batch, view.optimizer)['peak'])}, {human(batch * training.macs)} MACs")
        if view.capacity is not None:
            text += f"; largest batch in {view.capacity_name}: {training.fit(view.capacity, view.optimizer)}"
    if view.bound is not None:
        text += f"; latency {bound_text(view.bound)}"
    return text


def summary_text(network: Network, costs: Costs, listed: list[Row], view: View) -> None:
    print(table_text(listed, summary_columns(view), view))
    totals, feature, batch, dtype = costs.totals, costs.feature_map, view.batch, view.dtype
    per = f"batch of {batch}" if view.batched else "one sample"
    lines = [f"network {network.name} ({network.file}): input {shape_text(network.input_shape)} -> "
             f"output {shape_text(network.output_shape)}, {totals.depth} weight layers deep",
             f"params: {totals.params:,} ({human(totals.params)}), all trainable; without biases {totals.weights:,}",
             f"MACs: {batch * totals.macs:,} ({human(batch * totals.macs)}); FLOPs (2 x MACs): "
             f"{human(batch * totals.flops)}; counted: conv and linear layers"
             + (f"; {per}" if view.batched else "")]
    if totals.aux_macs:
        lines.append(f"auxiliary heads (training only, not in the MACs above): {batch * totals.aux_macs:,} MACs")
    lines += [f"activation memory: {batch * totals.activations:,} elements, "
              f"{byte_text(byte_size(batch * totals.activations, dtype))} at {dtype} "
              f"(every layer output and merge, {per})",
              f"input: {batch * totals.input_elements:,} elements, "
              f"{byte_text(byte_size(batch * totals.input_elements, dtype))}; "
              f"params: {byte_text(byte_size(totals.params, dtype))} at {dtype}"]
    if feature is not None and feature.field is not None:
        where = f"entering {feature.consumer_name}" if feature.consumer else "the output"
        stride = feature.field.stride
        stride_text = "" if stride is None else f", stride {stride[0] if stride[0] == stride[1] else stride}"
        lines.append(f"receptive field of the final feature map {shape_text(feature.shape)} ({where}): "
                     f"{field_text(feature.field)}{stride_text}")
    if any(row.cost.field is not None and row.cost.field.whole and row.cost.field.axes for row in listed):
        lines.append(WHOLE_NOTE)
    if view.train:
        lines += training_lines(costs, view)
    if view.bound is not None:
        lines += bound_lines(view.bound)
    print("\n".join(lines))


def bound_text(bound: Roofline) -> str:
    """`at least 63.0 µs on h100 (NVIDIA H100 SXM5 80GB), bfloat16, batch 1; a lower bound, not a prediction`."""
    return (f"at least {seconds_text(bound.total.seconds)} on {bound.profile.name} ({bound.profile.label}), "
            f"{bound.dtype}, batch {bound.batch}; a lower bound, not a prediction")


def bound_lines(bound: Roofline) -> list[str]:
    """The network's latency bound, what it is made of, and the profile's numbers and source."""
    total, profile, dtype = bound.total, bound.profile, bound.dtype
    return [f"latency: {bound_text(bound)}",
            f"  {total.compute_nodes} layers bound by compute ({seconds_text(total.compute_seconds)}), "
            f"{total.memory_nodes} by memory ({seconds_text(total.memory_seconds)}); "
            f"{human(total.flops)} FLOPs (2 x MACs of conv and linear), {byte_text(total.bytes)} moved",
            f"  each layer at least max(FLOPs / {human(int(profile.peak(dtype)))}FLOP/s, bytes / "
            f"{byte_text(int(profile.bandwidth))}/s"
            + (", or the measured cache rate for a layer small enough" if profile.cache else "")
            + "), the layers one after another; launch overheads and kernels below peak only add time",
            f"  fused (torch.compile, --optimize): at least {seconds_text(bound.fused_floor)} (every FLOP at peak, or "
            f"weights, input and output moved once)",
            f"  profile {profile.name}: {profile.source}"] + (
        [] if profile.cache else ["  memory at the datasheet's DRAM bandwidth: a layer whose tensors stay in the "
                                  "on-chip cache can beat it (docs/cost.md, Latency lower bounds)"])


def training_lines(costs: Costs, view: View) -> list[str]:
    """A training step's memory (the peak, and what it is made of) and MACs."""
    training, batch, optimizer = costs.training, view.batch, view.optimizer
    memory = training.memory(batch, optimizer)
    per_sample = (training.saved + training.live).per_sample
    heads = " (auxiliary heads included)" if costs.network.aux_heads else ""
    lines = [f"training step, batch {batch}, {training.precision.label}, optimizer {optimizer}:",
             f"  parameters {byte_text(memory['params'])} + gradients {byte_text(memory['grads'])} + optimizer "
             f"state {byte_text(memory['optimizer'])} + buffers {byte_text(memory['buffers'])}",
             f"  + activations saved for backward {byte_text(memory['saved'])} + input and output "
             f"{byte_text(memory['input_output'])}",
             f"  = peak {byte_text(memory['peak'])} ({gib_text(memory['peak'])}): {byte_text(per_sample)} per sample + "
             f"{byte_text(training.fixed(optimizer))}, the end of the forward pass with every part above resident",
             "  not counted: " + ", ".join(PEAK_EXCLUDES),
             f"  MACs: {human(batch * training.forward_macs)} forward{heads} + "
             f"{human(batch * training.backward_macs)} backward (input and weight gradients) = "
             f"{human(batch * training.macs)}; FLOPs: {human(batch * training.flops)}"]
    if view.capacity is not None:
        fit = training.fit(view.capacity, optimizer)
        if fit:
            lines.append(f"largest batch that fits in {view.capacity_name} ({gib_text(view.capacity)}): {fit:,} "
                         f"(peak {gib_text(training.memory(fit, optimizer)['peak'])})")
        else:
            lines.append(f"does not fit in {view.capacity_name} ({gib_text(view.capacity)}) even at batch 1 "
                         f"(peak {gib_text(training.memory(1, optimizer)['peak'])})")
    return lines


# ---- diff -----------------------------------------------------------------------------------

DIFF_NOTE = ("depth: conv and linear layers on the longest path through the module; MACs: multiply-accumulates "
             "of conv and linear layers (inference)")


def matched(first: list[Row], second: list[Row]) -> list[tuple[Row | None, Row | None]]:
    """Pairs rows by path, in the first network's order; rows of the second alone come after the
    row that precedes them there."""
    theirs = {row.path: row for row in second}
    ours = {row.path for row in first}
    pairs, pending = [], list(second)
    for row in first:
        if row.path in theirs:
            while pending and pending[0].path != row.path:
                extra = pending.pop(0)
                if extra.path not in ours:
                    pairs.append((None, extra))
            if pending:
                pending.pop(0)
        pairs.append((row, theirs.get(row.path)))
    pairs += [(None, row) for row in pending if row.path not in ours]
    return pairs


def _named_rows(network: Network, costs: Costs, max_depth: int) -> list[Row]:
    """Modules and layers (not combinators or named tensors) down to `max_depth`, each shown whole."""
    return [row for row in rows(network, costs, max_depth) if row.path]


def _total_cost(network: Network, costs: Costs) -> Cost:
    """The whole network as one row of the diff (inference MACs)."""
    totals = costs.totals
    return Cost(out_shape=network.output_shape, params=totals.params, biases=totals.biases, macs=totals.macs,
                elements=math.prod(network.output_shape), activations=totals.activations,
                field=costs.feature_map.field if costs.feature_map else None, depth=totals.depth,
                layers_deep=totals.depth)


def _delta(before: int, after: int) -> dict:
    return {"absolute": after - before, "percent": None if before == 0 else round(100 * (after - before) / before, 2)}


def _pair_json(a: Cost | None, b: Cost | None) -> dict:
    def side(cost: Cost | None) -> dict | None:
        return None if cost is None else {"layers_deep": cost.layers_deep, "output": list(cost.out_shape),
                                          "params": cost.params, "macs": cost.macs}

    delta = None if a is None or b is None else {
        "layers_deep": b.layers_deep - a.layers_deep, "params": _delta(a.params, b.params),
        "macs": _delta(a.macs, b.macs)}
    return {"a": side(a), "b": side(b), "delta": delta}


def _sides(first: Network, second: Network, max_depth: int) -> tuple[list[tuple[Row | None, Row | None]], Cost, Cost]:
    """The modules of both networks paired by path, and each network's total."""
    sides = []
    for network in (first, second):
        costs = analyse(network)
        sides.append((_named_rows(network, costs, max_depth), _total_cost(network, costs)))
    (first_rows, first_total), (second_rows, second_total) = sides
    return matched(first_rows, second_rows), first_total, second_total


def diff_json(first: Network, second: Network, max_depth: int) -> dict:
    """`netdsl diff --json`: both networks' modules down to `max_depth`, side by side, with the changes."""
    pairs, first_total, second_total = _sides(first, second, max_depth)
    return {
        "a": {"network": first.name, "file": first.file}, "b": {"network": second.name, "file": second.file},
        "rows": [dict(path=(a or b).path, name=_shown(a or b), type=(a or b).kind,
                      **_pair_json(a and a.cost, b and b.cost), changes=changes(a and a.node, b and b.node))
                 for a, b in pairs],
        "totals": _pair_json(first_total, second_total),
    }


def diff_text(first: Network, second: Network, max_depth: int) -> None:
    """`netdsl diff`: prints the comparison as a table, `A → B` where the networks differ."""
    pairs, first_total, second_total = _sides(first, second, max_depth)
    print(f"A: {first.name} ({first.file})\nB: {second.name} ({second.file})")
    table = _table([("module", "left"), ("depth A → B", "right"), ("output A → B", "left"),
                    ("params A → B", "right"), ("Δ params", "right"),
                    ("MACs A → B", "right"), ("Δ MACs", "right"), ("changes", "left")])
    for a, b in pairs:
        row = a or b
        where = "" if a and b else f" (only in {'A' if a else 'B'})"
        table.add_row("  " * row.level + _shown(row) + where, *_diff_cells(a and a.cost, b and b.cost),
                      "; ".join(changes(a and a.node, b and b.node)))
    table.add_section()
    table.add_row("total", *_diff_cells(first_total, second_total), "")
    print(_rendered(table))
    print(DIFF_NOTE)


CHANGED_ARGUMENTS = ("kernel", "stride", "out", "groups", "dilation")  # what `changes` says of a layer


def changes(first: Node | None, second: Node | None) -> list[str]:
    """What changed in the structure from `first` to `second`, in words: units of a stage
    ("4 → 8 bottleneck units"), blocks and combinators that appear or go ("se_module added"),
    a layer's op or arguments ("kernel 3 → 5", "× 4" where several layers change alike)."""
    if first is None or second is None or first.walk_kind != second.walk_kind:
        return []
    if first.walk_kind == "layer":
        return _layer_changes(first, second)
    units = [list(first.children()), list(second.children())]
    words = _unit_changes(*units)
    said = {_kind(node) for nodes in units for node in nodes} if words else set()  # the units' kinds are named
    inside = [Counter(_kinds(node)) for node in (first, second)]
    words += [f"{kind} added" for kind in inside[1] if kind not in inside[0] and kind not in said]
    words += [f"{kind} removed" for kind in inside[0] if kind not in inside[1] and kind not in said]
    theirs = {path: node for path, node, _ in walk(second) if node.walk_kind == "layer"}
    alike = Counter(word for path, node, _ in walk(first) if node.walk_kind == "layer" and path in theirs
                    for word in _layer_changes(node, theirs[path]))
    return words + [word if count == 1 else f"{word} (× {count})" for word, count in alike.items()]


def _kind(node: Node) -> str:
    return node.op if node.walk_kind == "layer" else node.type_name


def _kinds(module: Node):
    """The blocks and combinators inside `module` (groups, which have no name of their own, aside)."""
    for _, node, _ in walk(module):
        if node.walk_kind == "module" and node.type_name != "Sequential":
            yield node.type_name
        elif node.walk_kind == "merge":
            yield node.kind


def _unit_changes(first: list, second: list) -> list[str]:
    """`3 → 8 bottleneck units`, `3 bottleneck → 3 se_bottleneck units`: a stage of repeated units."""
    kinds = [{_kind(node) for node in nodes} for nodes in (first, second)]
    units = all(node.walk_kind == "module" for node in first + second)
    if not (first and second and units) or len(kinds[0]) != 1 or len(kinds[1]) != 1:
        return []
    (before,), (after,) = kinds
    if before == after:
        return [] if len(first) == len(second) else [f"{len(first)} → {len(second)} {before} units"]
    return [f"{len(first)} {before} → {len(second)} {after} units"]


def _layer_changes(first, second) -> list[str]:
    if first.op != second.op:
        return [f"{first.op} → {second.op}"]
    return [f"{name} {show(first.args[name])} → {show(second.args[name])}" for name in CHANGED_ARGUMENTS
            if name in first.args and first.args[name] != second.args.get(name)]


def _change(before, after, show) -> str:
    if before is None or after is None:
        return f"{'–' if before is None else show(before)} → {'–' if after is None else show(after)}"
    return show(before) if before == after else f"{show(before)} → {show(after)}"


def _delta_text(before: int, after: int) -> str:
    if before == after:
        return "="
    change = _delta(before, after)
    sign = "+" if change["absolute"] > 0 else "-"
    percent = "" if change["percent"] is None else f" ({change['percent']:+.1f}%)"
    return f"{sign}{human(abs(change['absolute']))}{percent}"


def _diff_cells(a: Cost | None, b: Cost | None) -> list[str]:
    """depth, output, params, Δ params, MACs, Δ MACs: one value when equal, `A → B` when not."""
    def get(cost, attribute):
        return None if cost is None else getattr(cost, attribute)

    both = a is not None and b is not None
    return [_change(get(a, "layers_deep"), get(b, "layers_deep"), str),
            _change(get(a, "out_shape"), get(b, "out_shape"), shape_text),
            _change(get(a, "params"), get(b, "params"), human),
            _delta_text(a.params, b.params) if both else "",
            _change(get(a, "macs"), get(b, "macs"), human),
            _delta_text(a.macs, b.macs) if both else ""]
