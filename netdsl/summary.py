"""`netdsl summary` and `netdsl diff`: checked network + cost model → tables (rich) or JSON.

Reads the numbers `netdsl.cost` attaches to the checker's graph and never recomputes them.
A summary lists every node in dataflow order, indented by nesting and folded by module depth;
a diff sets two networks' modules side by side, matched by their dotted names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cost import Cost, Costs, Field, analyse, byte_size
from .combinators import COMBINATORS
from .graph import Network, Node
from .text import human, shape_text

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
    found.append(Row(f"{prefix}{node.name}", name, kind_prefix + kind, level, depth, False, costs[node]))


def _module_row(node, costs, prefix, level, depth, max_depth, found, kind_prefix) -> None:
    folded = depth >= max_depth and bool(node.body)
    found.append(Row(f"{prefix}{node.name}", node.name, kind_prefix + node.type_name, level, depth, folded,
                     costs[node]))
    if not folded:
        _collect(node.body, costs, f"{prefix}{node.name}.", level + 1, depth + 1, max_depth, found)


def _merge_row(node, costs, prefix, level, depth, max_depth, found, kind_prefix) -> None:
    combinator = COMBINATORS[node.kind]
    if combinator.passthrough:  # a side computation (an auxiliary head): its contents, as the main path's
        for arm in node.arms:
            _collect(arm, costs, prefix, level, depth, max_depth, found, f"{combinator.label}: ")
        return
    found.append(Row("", "", combinator.label, level, depth, False, costs[node]))
    for arm in node.arms:
        _collect(arm, costs, prefix, level + 1, depth, max_depth, found)


def _marker_row(kind: str):
    def row(node, costs, prefix, level, depth, max_depth, found, kind_prefix) -> None:
        found.append(Row("", node.wire.name, kind, level, depth, False, costs[node]))
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


def _megabytes(size: int) -> str:  # decimal megabytes, as torchinfo
    return f"{size / 1e6:,.2f} MB"


def row_json(row: Row, dtype: str) -> dict:
    cost = row.cost
    return {
        "path": row.path, "name": row.name, "type": row.kind, "level": row.level, "depth": row.depth,
        "folded": row.folded, "output": list(cost.out_shape), "params": cost.params,
        "params_without_biases": cost.weights, "macs": cost.macs,
        "memory": {"elements": cost.elements, "bytes": byte_size(cost.elements, dtype)},
        "activations": cost.activations, "receptive_field": cost.field.to_json() if cost.field else None,
        "layers_deep": cost.layers_deep,
    }


def summary_json(network: Network, costs: Costs, listed: list[Row], dtype: str, max_depth: int) -> dict:
    totals, feature = costs.totals, costs.feature_map
    return {
        "network": network.name, "file": network.file, "input": list(network.input_shape),
        "output": list(network.output_shape), "dtype": dtype, "fold_depth": max_depth,
        "rows": [row_json(row, dtype) for row in listed],
        "totals": {
            "params": totals.params, "params_without_biases": totals.weights, "trainable": totals.params,
            "macs": totals.macs, "flops": totals.flops, "aux_macs": totals.aux_macs,
            "activation_memory": {"elements": totals.activations, "bytes": byte_size(totals.activations, dtype)},
            "input": {"elements": totals.input_elements, "bytes": byte_size(totals.input_elements, dtype)},
            "params_bytes": byte_size(totals.params, dtype), "layers_deep": totals.depth,
            "receptive_field": None if feature is None else feature.to_json(),
        },
    }


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


def summary_text(network: Network, costs: Costs, listed: list[Row], dtype: str, no_biases: bool) -> None:
    params_title = "params (no biases)" if no_biases else "params"
    table = _table([("layer", "left"), ("type", "left"), ("output", "left"), (params_title, "right"),
                    ("MACs", "right"), ("memory", "right"), ("RF", "right")])
    for row in listed:
        cost = row.cost
        name = _shown(row)
        numbers = row.kind not in ("tap", "from")
        params = cost.weights if no_biases else cost.params
        table.add_row(
            "  " * row.level + name + (" ..." if row.folded else ""),
            "" if not row.name or row.kind == "input" else row.kind,
            shape_text(cost.out_shape), f"{params:,}" if numbers and params else "",
            human(cost.macs) if cost.macs else "", f"{cost.elements:,}" if numbers else "",
            field_text(cost.field))
    _console(table).print(table)
    totals, feature = costs.totals, costs.feature_map
    lines = [f"network {network.name} ({network.file}): input {shape_text(network.input_shape)} -> "
             f"output {shape_text(network.output_shape)}, {totals.depth} weight layers deep",
             f"params: {totals.params:,} ({human(totals.params)}), all trainable; without biases {totals.weights:,}",
             f"MACs: {totals.macs:,} ({human(totals.macs)}); FLOPs (2 x MACs): {human(totals.flops)}; "
             "counted: conv and linear layers"]
    if totals.aux_macs:
        lines.append(f"auxiliary heads (training only, not in the MACs above): {totals.aux_macs:,} MACs")
    lines += [f"activation memory: {totals.activations:,} elements, {_megabytes(byte_size(totals.activations, dtype))}"
              f" at {dtype} (every layer output and merge, one sample)",
              f"input: {totals.input_elements:,} elements, {_megabytes(byte_size(totals.input_elements, dtype))}; "
              f"params: {_megabytes(byte_size(totals.params, dtype))} at {dtype}"]
    if feature is not None and feature.field is not None:
        where = f"entering {feature.consumer_name}" if feature.consumer else "the output"
        stride = feature.field.stride
        stride_text = "" if stride is None else f", stride {stride[0] if stride[0] == stride[1] else stride}"
        lines.append(f"receptive field of the final feature map {shape_text(feature.shape)} ({where}): "
                     f"{field_text(feature.field)}{stride_text}")
    if any(row.cost.field is not None and row.cost.field.whole and row.cost.field.axes for row in listed):
        lines.append(WHOLE_NOTE)
    print("\n".join(lines))


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
        "rows": [dict(path=(a or b).path, name=_shown(a or b), type=(a or b).kind, **_pair_json(a and a.cost, b and b.cost))
                 for a, b in pairs],
        "totals": _pair_json(first_total, second_total),
    }


def diff_text(first: Network, second: Network, max_depth: int) -> None:
    """`netdsl diff`: prints the comparison as a table, `A → B` where the networks differ."""
    pairs, first_total, second_total = _sides(first, second, max_depth)
    print(f"A: {first.name} ({first.file})\nB: {second.name} ({second.file})")
    table = _table([("module", "left"), ("depth A → B", "right"), ("output A → B", "left"),
                    ("params A → B", "right"), ("Δ params", "right"),
                    ("MACs A → B", "right"), ("Δ MACs", "right")])
    for a, b in pairs:
        row = a or b
        where = "" if a and b else f" (only in {'A' if a else 'B'})"
        table.add_row("  " * row.level + _shown(row) + where, *_diff_cells(a and a.cost, b and b.cost))
    table.add_section()
    table.add_row("total", *_diff_cells(first_total, second_total))
    _console(table).print(table)
    print(DIFF_NOTE)


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
