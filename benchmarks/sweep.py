"""How fast `netdsl sweep` checks and costs variants (no torch): the EfficientNet family's width and depth.

    python benchmarks/sweep.py            # width 1.0:2.0:0.1 x depth 1.0:3.0:0.2 (121 variants), best of 3
    python benchmarks/sweep.py --quick    # 3 x 3 variants, once

Prints variants per second, counting every variant the sweep checks, costs (training peak at batch
32, bfloat16 autocast) and marks against the Pareto front; then the floor of checking one variant
in this design: the same variant checked again, every block instance already remembered (the
network's own loops and arguments evaluated, the instances copied), best of 20, at depth 1, 2, 3.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from netdsl.api import checker, parse_override  # noqa: E402
from netdsl.cost import Precision  # noqa: E402
from netdsl.sweep import parse_axis, sweep  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 x 3 variants, one run (a smoke run)")
    args = parser.parse_args(argv)
    axes = ([parse_axis("width=1.0:2.0:0.5"), parse_axis("depth=1.0:2.0:0.5")] if args.quick else
            [parse_axis("width=1.0:2.0:0.1"), parse_axis("depth=1.0:3.0:0.2")])
    best = float("inf")
    for _ in range(1 if args.quick else 3):
        start = time.perf_counter()
        variants = sweep(ROOT / "networks" / "efficientnet.net", axes, batch=32, precision=Precision("bfloat16"))
        best = min(best, time.perf_counter() - start)
    checked = sum(variant.error is None for variant in variants)
    print(f"efficientnet.net: {len(variants)} variants ({checked} checked) in {best:.2f} s: "
          f"{len(variants) / best:.1f} variants per second")
    check = checker(ROOT / "networks" / "efficientnet.net")
    for depth in ("1.0", "2.0", "3.0"):
        overrides = dict(parse_override(text) for text in ("width=1.5", f"depth={depth}"))
        check(**overrides)  # the instances remembered
        again = min(_seconds(lambda: check(**overrides)) for _ in range(1 if args.quick else 20))
        print(f"width 1.5, depth {depth} checked again, every block instance remembered: {again * 1e3:.2f} ms")
    return 0


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
