"""Do the latency lower bounds hold on this CPU? Calibrates it, then times every layer of a few networks.

    python benchmarks/roofline.py [--threads 1] [--batches 1 8] [--repeats 7] [--json OUT.json]

For each network: the emitted module in eval mode, under no_grad, traced with torch.fx (every
module without children a leaf, so each netdsl layer is one node: a module call, or a function
call such as `torch.flatten`, a residual's `+`, a concatenation's `torch.cat`); a timing
`torch.fx.Interpreter` runs it, `time.perf_counter` around each node, the median of `--repeats`
runs after a warm-up, less the timer's own cost (measured on a node that does nothing). Each fx
node is matched to the netdsl layer or merge it runs (module calls by their dotted path, the
others in order within their module), and its measured time compared with the bound
`netdsl.roofline` gives it on the profile just calibrated, at float32. Reported per network and
batch: the layers with a non-zero bound, the share measured at or above it (the target: 95 %),
the median measured/bound ratio, and a plain forward pass's time over the network's bound; also
the share under a profile without the cache ladder (DRAM bandwidth for every layer), and the
layers that fell below their bound. No assertion: it prints what it saw (the table in docs/cost.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.fx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import netdsl  # noqa: E402
from netdsl import calibrate  # noqa: E402
from netdsl.combinators import COMBINATORS  # noqa: E402
from netdsl.layers import REGISTRY  # noqa: E402
from netdsl.roofline import roofline  # noqa: E402
from netdsl.walk import Interpreter  # noqa: E402

NETWORKS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "vgg16", "densenet121"]


class _Leaves(torch.fx.Tracer):
    def is_leaf_module(self, module, qualified_name) -> bool:
        return not any(True for _ in module.children())


class _Timed(torch.fx.Interpreter):
    """Runs the graph, adding each computing node's seconds to `times[node]`."""

    def __init__(self, module, times):
        super().__init__(module)
        self.times = times

    def run_node(self, node):
        if node.op in ("placeholder", "output", "get_attr"):
            return super().run_node(node)
        start = time.perf_counter()
        result = super().run_node(node)
        self.times.setdefault(node, []).append(time.perf_counter() - start)
        return result


def _nothing(value):
    return value


def timer_cost(repeats: int = 2000) -> float:
    """The median seconds `_Timed` measures for a node that does nothing."""
    graph = torch.fx.Graph()
    graph.output(graph.call_function(_nothing, (graph.placeholder("x"),)))
    module = torch.fx.GraphModule(torch.nn.Module(), graph)
    times: dict = {}
    x = torch.zeros(1)
    for _ in range(repeats):
        _Timed(module, times).run(x)
    return statistics.median(next(iter(times.values())))


class _Order(Interpreter):
    """netdsl's layers and merges in the order the emitted module runs them: (module path, node,
    how it runs: "module" at its dotted path, or "inline" in its module's forward)."""

    def __init__(self):
        super().__init__()
        self.found = []

    def layer(self, layer, value):
        enclosing = self.modules[-1]
        inline = enclosing.calls(layer) or REGISTRY[layer.op].parameter
        self.found.append((self.prefix.rstrip("."), layer, "inline" if inline else f"{self.prefix}{layer.name}"))
        return value

    def merge(self, merge, value, arms):
        if not COMBINATORS[merge.kind].passthrough:  # an auxiliary head does not run in eval
            self.found.append((self.prefix.rstrip("."), merge, "inline"))
        return value


def match(network, graph) -> tuple[list[tuple[object, object]], list, list]:
    """(netdsl node, fx node) pairs, and the fx nodes and netdsl nodes left unmatched."""
    order = _Order()
    order.run(network, None)
    by_path: dict[str, list] = {}
    inline: dict[str, list] = {}
    for module_path, node, how in order.found:
        if how == "inline":
            inline.setdefault(module_path, []).append(node)
        else:
            by_path.setdefault(how, []).append(node)
    pairs, extra = [], []
    for fx_node in graph.nodes:
        if fx_node.op in ("placeholder", "output", "get_attr"):
            continue
        if fx_node.op == "call_module":
            queue = by_path.get(fx_node.target, [])
        else:
            stack = fx_node.meta.get("nn_module_stack") or {}
            queue = inline.get(list(stack)[-1] if stack else "", [])
        if queue:
            pairs.append((queue.pop(0), fx_node))
        else:
            extra.append(fx_node)
    left = [node for queue in [*by_path.values(), *inline.values()] for node in queue]
    return pairs, extra, left


def describe(node) -> str:
    return node.op if node.walk_kind == "layer" else COMBINATORS[node.kind].label


def run_network(name: str, batch: int, profile, dram, repeats: int, overhead: float) -> dict:
    network = netdsl.check(ROOT / "networks" / f"{name}.net")
    from netdsl.emit import build

    model = build(network).eval()
    graph = _Leaves().trace(model)
    module = torch.fx.GraphModule(model, graph)
    pairs, extra, left = match(network, graph)
    x = torch.randn(batch, *network.input_shape)
    times: dict = {}
    with torch.no_grad():
        _Timed(module, {}).run(x)  # warm-up: first calls pick kernels and allocate
        for _ in range(repeats):
            _Timed(module, times).run(x)
        model(x)
        forward = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            forward.append(time.perf_counter() - start)
    bounds, plain = roofline(network, profile, "float32", batch), roofline(network, dram, "float32", batch)
    rows = []
    for node, fx_node in pairs:
        bound = bounds[node]
        if not bound.seconds:
            continue  # a view or an identity: nothing to bound
        measured = statistics.median(times[fx_node]) - overhead
        rows.append({"layer": describe(node), "fx": fx_node.name, "bound_s": bound.seconds, "measured_s": measured,
                     "dram_bound_s": plain[node].seconds, "limit": bound.limit, "bytes": bound.bytes,
                     "flops": bound.flops})
    held = [row for row in rows if row["measured_s"] >= row["bound_s"]]
    held_dram = [row for row in rows if row["measured_s"] >= row["dram_bound_s"]]
    return {
        "network": name, "batch": batch, "layers": len(rows), "held": len(held),
        "held_share": len(held) / len(rows), "held_share_dram_only": len(held_dram) / len(rows),
        "median_ratio": statistics.median(row["measured_s"] / row["bound_s"] for row in rows),
        "forward_s": statistics.median(forward), "bound_s": bounds.total.seconds,
        "forward_over_bound": statistics.median(forward) / bounds.total.seconds,
        "unmatched_fx": [f"{n.op} {n.target}" for n in extra], "unmatched_netdsl": [describe(n) for n in left],
        "below": [row for row in rows if row["measured_s"] < row["bound_s"]],
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for calibration and timing (default 1)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--networks", nargs="+", default=NETWORKS)
    parser.add_argument("--json", help="write every layer's numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load = os.getloadavg()
    profile = calibrate.measure("benchmark", "cpu", threads=args.threads)
    dram = dataclasses.replace(profile, cache=())
    overhead = timer_cost()
    print(calibrate.report(profile))
    print(f"timer's own cost per node: {overhead * 1e6:.2f} µs (subtracted)")
    results = []
    for name in args.networks:
        for batch in args.batches:
            result = run_network(name, batch, profile, dram, args.repeats, overhead)
            results.append(result)
            print(f"{name} batch {batch}: {result['held']}/{result['layers']} at or above the bound, "
                  f"median ratio {result['median_ratio']:.2f}, forward {result['forward_s'] * 1e3:.1f} ms / bound "
                  f"{result['bound_s'] * 1e3:.1f} ms; unmatched {len(result['unmatched_fx'])} fx, "
                  f"{len(result['unmatched_netdsl'])} netdsl", flush=True)
    print()
    print(f"machine: {calibrate._cpu_name()} ({os.cpu_count()} cores), {args.threads} thread(s), torch "
          f"{torch.__version__}, Python {platform.python_version()}; load average before the run "
          f"{load[0]:.2f}, after {os.getloadavg()[0]:.2f}; {time.perf_counter() - started:.0f} s")
    print()
    print("| network | batch | layers | measured ≥ bound | median measured / bound | forward / network bound "
          "| ≥ bound at DRAM bandwidth only |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(f"| {result['network']} | {result['batch']} | {result['layers']} | {result['held_share']:.1%} "
              f"| {result['median_ratio']:.2f} | {result['forward_s'] * 1e3:.1f} ms / {result['bound_s'] * 1e3:.1f} ms "
              f"= {result['forward_over_bound']:.2f} | {result['held_share_dram_only']:.1%} |")
    below = [(result["network"], result["batch"], row) for result in results for row in result["below"]]
    if below:
        print()
        print("below their bound:")
        for name, batch, row in below:
            print(f"  {name} batch {batch}: {row['layer']} ({row['fx']}, {row['limit']}-bound, "
                  f"{row['bytes'] / 1e6:.2f} MB, {row['flops'] / 1e6:.1f} MFLOP): measured "
                  f"{row['measured_s'] * 1e6:.1f} µs < bound {row['bound_s'] * 1e6:.1f} µs")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": profile.to_json(), "overhead_s": overhead,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
