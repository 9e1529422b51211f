"""netdsl against torchvision and the recipes users would pick instead, in one process on one machine:
checking, compiling and running.

    python benchmarks/run.py             # full run (about 10 minutes on 2 CPU cores) -> benchmarks/RESULTS.md
    python benchmarks/run.py --quick     # smoke run: one network, every variant once, printed (or -o FILE)
    python benchmarks/run.py --threads 1 # steadier on a machine other jobs are using

For resnet50, resnet152, vgg16, mobilenet_v2 and efficientnet_b0 it measures
- `netdsl.check` (parse, resolve, check; no torch) against building the torchvision model;
- `netdsl.compile` to a TorchScript file against torchvision's build + `torch.jit.script` + save;
- CPU forward latency (eval, no_grad) at batch 1 and 8, every variant with the weights of one
  torchvision model (netdsl's state_dict keys are torchvision's): torchvision eager, + `torch.compile`,
  + `torch.jit.freeze` + `torch.jit.optimize_for_inference`, its own ONNX export in onnxruntime; netdsl
  eager, its TorchScript file, its `--optimize` file (loaded with `netdsl.load`), its `--format onnx
  --optimize` file in onnxruntime and its `--format aoti --optimize` package. torch and onnxruntime
  run with the same number of threads (`--threads`, recorded). torch.compile and AOTInductor need a
  C++ compiler and minutes per network, so only the networks `--compiled` names get them (NOTE:
  [Compiled rows]); torch.compile recompiles for batch 8 (dynamic batch), the AOTI package has a
  dynamic batch and is compiled once; their compile times are a table of their own, from a cold
  inductor cache;
- on CUDA, where present: images/s at bfloat16 with channels-last, eager and `torch.compile`.
Every figure is a median over repeats taken round-robin (one run of each variant in turn, after a
warm-up), so that a slower or busier moment of the machine hits all variants alike. Ratios are
netdsl / torchvision: below 1.0 netdsl is faster, for throughput above 1.0.

The "Findings" section of an existing results file is written by hand and kept across runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

import netdsl  # noqa: E402
from netdsl.fileio import write_atomically  # noqa: E402

NETWORKS = ["resnet50", "resnet152", "vgg16", "mobilenet_v2", "efficientnet_b0"]
FINDINGS = "## Findings"
# NOTE: [Compiled rows] torch.compile and AOTInductor compile for minutes per network on 2 cores
# (resnet50, a busy machine: torch.compile 90 s at batch 1 and 58 s more at batch 8, AOTI 51 s),
# so by default only these get those rows and the full run stays under 10 minutes; --compiled all.
COMPILED_NETWORKS = ("resnet50", "mobilenet_v2")


@dataclass
class Bench:
    """One network: its .net file and the torchvision model it is measured against."""

    name: str
    path: Path
    reference: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]


@dataclass
class Results:
    check: dict = field(default_factory=dict)  # network -> {"netdsl": s, "torchvision": s}
    check_all: dict = field(default_factory=dict)  # {"files": n, "seconds": s, "torch_imported": bool}
    large_import: dict = field(default_factory=dict)  # {"blocks": n, "megabytes": m, "seconds": s}
    check_command: dict = field(default_factory=dict)  # network -> wall s of `netdsl check FILE`
    variants: dict = field(default_factory=dict)  # `measure_variants`
    compile: dict = field(default_factory=dict)  # network -> {"netdsl": s, "torchvision": s}
    latency: dict = field(default_factory=dict)  # (network, batch) -> {variant: s}
    prepare: dict = field(default_factory=dict)  # network -> {(variant, None): s to make it, (variant, batch): first call}
    throughput: dict = field(default_factory=dict)  # (network, mode) -> {variant: images/s}


def torchvision_bench(name: str) -> Bench:
    import torchvision

    path = ROOT / "networks" / f"{name}.net"
    return Bench(name, path, getattr(torchvision.models, name), netdsl.check(path).input_shape)


def round_robin(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each variant, calling them in turn `repeats` times."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ---- check ------------------------------------------------------------------------------

def measure_check(bench: Bench, repeats: int) -> dict[str, float]:
    return round_robin({"netdsl": lambda: netdsl.check(bench.path), "torchvision": bench.reference}, repeats)


def measure_check_all(directory: Path, repeats: int) -> dict:
    """Checking every file of `directory` in this process; the same in a fresh process, import
    included (wall seconds, median), and whether the checker imported torch there."""
    files = sorted(directory.glob("*.net"))
    seconds = round_robin({"all": lambda: [netdsl.check(f) for f in files]}, repeats)["all"]
    probe = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import netdsl; "
             f"[netdsl.check(f) for f in {[str(f) for f in files]!r}]; print('torch' in sys.modules)")
    walls, imported = [], None
    for _ in range(min(repeats, 3)):  # 1-2 s each
        start = time.perf_counter()
        imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - start)
    return {"files": len(files), "seconds": seconds, "fresh_seconds": statistics.median(walls),
            "torch_imported": imported.stdout.strip() == "True"}


def measure_check_command(path: Path, repeats: int) -> float:
    """Wall seconds (median) of `netdsl check FILE`, a fresh process each time, as a user runs it."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "netdsl", "check", str(path)], capture_output=True, check=True,
                       env=environment)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def measure_variants(path: Path, axes: dict[str, list], repeats: int) -> dict:
    """Variants of `path` checked per second (`netdsl.api.checker`, as `netdsl sweep` checks them, without
    its cost model): every combination of `axes`, a fresh checker per repeat; the median."""
    import itertools

    from netdsl.api import checker

    combinations = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    seconds = []
    for _ in range(repeats):
        check = checker(path)
        start = time.perf_counter()
        for overrides in combinations:
            check(**overrides)
        seconds.append(time.perf_counter() - start)
    return {"file": path.name, "variants": len(combinations), "seconds": statistics.median(seconds),
            "axes": {name: (min(values), max(values)) for name, values in axes.items()}}


def measure_large_import(blocks: int, repeats: int, workdir: Path) -> dict:
    """Checking a network that imports a file of `blocks` small blocks (issue 13 item 16: 100,000 took
    48 s), in a fresh process each time, so that no parse is cached: the median of its CPU seconds."""
    library = workdir / "many_blocks.net"
    library.write_text("".join(f"block b{i}(c=8) {{\n  conv(c, 3, pad=1)\n  relu\n}}\n" for i in range(blocks)))
    main = workdir / "imports_many.net"
    main.write_text(f'import "{library.name}"\n\nnetwork n {{\n  input [3, 16, 16]\n  b7()\n  b{blocks - 1}(c=4)\n}}\n')
    probe = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import netdsl; start = time.process_time(); "
             f"netdsl.check({str(main)!r}); print(time.process_time() - start)")
    seconds = [float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
               for _ in range(repeats)]
    return {"blocks": blocks, "megabytes": library.stat().st_size / 1e6, "seconds": statistics.median(seconds)}


# ---- compile ----------------------------------------------------------------------------

def measure_compile(bench: Bench, repeats: int, workdir: Path) -> dict[str, float]:
    """`netdsl.compile` to TorchScript (check, build, script, save) vs torchvision build + script + save."""
    from netdsl.emit import script

    def reference() -> None:
        scripted = script(bench.reference())
        write_atomically(workdir / "reference.pt", lambda tmp: torch.jit.save(scripted, tmp))

    return round_robin({"netdsl": lambda: netdsl.compile(bench.path, workdir / f"{bench.name}.pt"),
                        "torchvision": reference}, repeats, warmup=0)


# ---- CPU latency --------------------------------------------------------------------------

# The CPU variants, in table order. "torchvision" (eager) is the base of every ratio.
TORCHVISION = ["torchvision", "torchvision + torch.compile", "torchvision + freeze + optimize_for_inference",
               "torchvision ONNX (onnxruntime)"]
NETDSL = ["netdsl eager", "netdsl TorchScript", "netdsl --optimize", "netdsl ONNX --optimize (onnxruntime)",
          "netdsl AOTI --optimize"]
COMPILED = ("torchvision + torch.compile", "netdsl AOTI --optimize")  # need inductor: a C++ compiler, minutes


@dataclass
class CpuModels:
    """The variants timed on CPU for one network, each a function of the input batch, with torchvision's
    weights everywhere; `prepare` the seconds each took to make (export, compile, load), `first_call`
    filled by `measure_latency` (torch.compile compiles there, once per batch size)."""

    runs: dict[str, Callable[[torch.Tensor], object]]
    prepare: dict[str, float] = field(default_factory=dict)
    first_call: dict[tuple[str, int], float] = field(default_factory=dict)


def cpu_models(bench: Bench, workdir: Path, threads: int, compiled: bool) -> CpuModels:
    """Every variant, eval mode, with the weights of one torchvision model (the netdsl files are the
    ones `netdsl compile` writes from them); `compiled`: the torch.compile and AOTInductor ones too."""
    from netdsl.api import _cxx
    from netdsl.emit import save_onnx, script

    reference = bench.reference().eval()
    weights = reference.state_dict()
    runs: dict[str, Callable] = {}
    prepare: dict[str, float] = {}

    def timed(name: str, make: Callable[[], Callable]) -> None:
        start = time.perf_counter()
        runs[name] = make()
        prepare[name] = time.perf_counter() - start

    def session(path: Path) -> Callable:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # onnxruntime's threads spin for a while after each run by default, taking the cores from the
        # variant timed next: netdsl eager and AOTI, right after the two ONNX rows, read 1.6x slow
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        ort = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: ort.run(None, {"input": x.numpy()})

    def compiled_file(fmt: str, suffix: str) -> Path:
        return netdsl.compile(bench.path, workdir / f"{bench.name}.{suffix}", format=fmt, optimize=True,
                              state_dict=weights)[1]

    def netdsl_eager() -> torch.nn.Module:
        model = netdsl.build(bench.path)
        model.load_state_dict(weights)
        return model.eval()

    with_compiler = compiled and _cxx() is not None
    timed("torchvision", lambda: reference)
    if with_compiler:
        timed("torchvision + torch.compile", lambda: torch.compile(reference))
    timed("torchvision + freeze + optimize_for_inference",
          lambda: torch.jit.optimize_for_inference(torch.jit.freeze(script(reference).eval())))
    timed("torchvision ONNX (onnxruntime)", lambda: (save_onnx(reference, workdir / "torchvision.onnx",
                                                               bench.input_shape), session(workdir / "torchvision.onnx"))[1])
    timed("netdsl eager", netdsl_eager)
    timed("netdsl TorchScript", lambda: torch.jit.load(str(netdsl.compile(
        bench.path, workdir / f"{bench.name}.pt", state_dict=weights)[1])).eval())
    timed("netdsl --optimize", lambda: netdsl.load(compiled_file("torchscript", "opt.pt")))
    timed("netdsl ONNX --optimize (onnxruntime)", lambda: session(compiled_file("onnx", "onnx")))
    if with_compiler:
        timed("netdsl AOTI --optimize", lambda: torch._inductor.aoti_load_package(str(compiled_file("aoti", "pt2"))))
    return CpuModels(runs, prepare)


def measure_latency(bench: Bench, models: CpuModels, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per batch of each variant, round-robin, after one timed first call (torch.compile
    compiles for the batch size there) and one more warm-up call."""
    inputs = torch.randn(batch, *bench.input_shape)
    with torch.no_grad():
        for name, run in models.runs.items():
            start = time.perf_counter()
            run(inputs)
            models.first_call[name, batch] = time.perf_counter() - start
        return round_robin({name: (lambda r=run: r(inputs)) for name, run in models.runs.items()}, repeats, warmup=1)


# ---- GPU throughput ----------------------------------------------------------------------

def measure_throughput(bench: Bench, device: str, dtype: torch.dtype, batch: int, repeats: int,
                       compiled: bool) -> dict[str, float]:
    """Images per second, eval, channels-last, netdsl eager vs torchvision eager (or both after
    `torch.compile`)."""
    models = {"torchvision": bench.reference(), "netdsl": netdsl.build(bench.path)}
    inputs = torch.randn(batch, *bench.input_shape, device=device, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    runs = {}
    for name, model in models.items():
        model = model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)
        model = torch.compile(model) if compiled else model
        runs[name] = lambda m=model: (m(inputs), _synchronize(device))
    with torch.no_grad():
        seconds = round_robin(runs, repeats, warmup=3)
    return {name: batch / value for name, value in seconds.items()}


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- the whole run -------------------------------------------------------------------------

def run(benches: list[Bench], repeats: dict[str, int], batches: tuple[int, ...], workdir: Path,
        log=print, compiled_networks: tuple[str, ...] | None = None) -> Results:
    """Every measurement for `benches`; `repeats` per kind: check, compile, latency, throughput.
    `compiled_networks`: the networks that get the torch.compile and AOTInductor rows (None: all)."""
    results = Results()
    for bench in benches:
        log(f"{bench.name}: check, compile")
        results.check[bench.name] = measure_check(bench, repeats["check"])
        results.compile[bench.name] = measure_compile(bench, repeats["compile"], workdir)
        log(f"{bench.name}: preparing the CPU variants")
        models = cpu_models(bench, workdir, torch.get_num_threads(),
                            compiled_networks is None or bench.name in compiled_networks)
        for batch in batches:
            log(f"{bench.name}: CPU latency, batch {batch}")
            results.latency[bench.name, batch] = measure_latency(bench, models, batch, repeats["latency"])
        results.prepare[bench.name] = {**{(name, None): s for name, s in models.prepare.items()},
                                       **{key: s for key, s in models.first_call.items() if key[0] in COMPILED}}
        del models
        if torch.cuda.is_available():
            for compiled in (False, True):
                mode = "torch.compile" if compiled else "eager"
                log(f"{bench.name}: CUDA throughput, {mode}")
                results.throughput[bench.name, mode] = measure_throughput(
                    bench, "cuda", torch.bfloat16, 64, repeats["throughput"], compiled)
    return results


# ---- the report ------------------------------------------------------------------------------

def machine(command: str = "python benchmarks/run.py") -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    import torchvision

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "command": f"`{command}`",
        "CPU": f"{cpu}, {os.cpu_count()} cores, torch and onnxruntime use {torch.get_num_threads()} thread(s)",
        "GPU": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "versions": f"Python {platform.python_version()}, torch {torch.__version__}, "
                    f"torchvision {torchvision.__version__}, onnxruntime {_version('onnxruntime')}, "
                    f"netdsl {netdsl.__version__}",
    }
    return info


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} (with uncommitted changes)" if git("status", "--porcelain") else commit


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}" if seconds < 10 else f"{seconds * 1000:,.0f}"


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the first column left-aligned, the numbers right-aligned."""
    rule = "|---|" + "---:|" * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", rule] + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(results: Results, info: dict[str, str], repeats: dict[str, int], findings: str) -> str:
    lines = ["# Benchmark results", "",
             "Written by `python benchmarks/run.py` (see its docstring for what is measured and how).",
             "Medians of round-robin repeats; ratios are netdsl / torchvision (below 1.0× netdsl is",
             "faster; for images/s, above 1.0× is faster). Random weights.", ""]
    lines += [f"- **{key}**: {value}" for key, value in info.items()]
    lines += [f"- **repeats**: " + ", ".join(f"{k} {v}" for k, v in repeats.items()), ""]

    lines += ["## Checking vs building the torchvision model", ""]
    rows = [[name, _ms(t["netdsl"]), _ms(t["torchvision"]), _ratio(t["netdsl"], t["torchvision"])]
            for name, t in results.check.items()]
    lines += _table(["network", "netdsl check (ms)", "torchvision build (ms)", "ratio"], rows)
    if results.check_all:
        every = results.check_all
        lines += ["", f"Checking all {every['files']} files of `networks/`: {_ms(every['seconds'])} ms; "
                      f"torch imported by the checker: {'yes' if every['torch_imported'] else 'no'}."]
        if "fresh_seconds" in every:
            lines[-1] += f" In a fresh process, import included: {_ms(every['fresh_seconds'])} ms."
    for name, seconds in results.check_command.items():
        lines += ["", f"`netdsl check networks/{name}.net` in a fresh process (wall, as a user runs it): {_ms(seconds)} ms."]
    if results.variants:
        variants = results.variants
        ranges = ", ".join(f"{name} {low}–{high}" for name, (low, high) in variants["axes"].items())
        lines += ["", f"Variants of `{variants['file']}` checked per second (`netdsl.api.checker`, as `netdsl sweep` "
                      f"checks them, without the cost model; {variants['variants']} variants, {ranges}): "
                      f"{variants['variants'] / variants['seconds']:.0f}."]
    if results.large_import:
        large = results.large_import
        lines += ["", f"Checking a network that imports {large['blocks']:,} small blocks ({large['megabytes']:.1f} MB "
                      f"of source, a fresh process each time): {large['seconds']:.2f} s of CPU time."]

    lines += ["", "## Compiling to TorchScript", "",
              "`netdsl.compile` (check, build, `torch.jit.script`, save) vs torchvision build + "
              "`torch.jit.script` + save.", ""]
    rows = [[name, _ms(t["netdsl"]), _ms(t["torchvision"]), _ratio(t["netdsl"], t["torchvision"])]
            for name, t in results.compile.items()]
    lines += _table(["network", "netdsl (ms)", "torchvision (ms)", "ratio"], rows)

    lines += ["", "## CPU forward latency", "",
              "Eval mode, `torch.no_grad()`, milliseconds per batch, every variant with the same (torchvision's) "
              "weights; ratio to torchvision eager in brackets; — where a variant was not run (see the "
              "docstring: torch.compile and AOTInductor only for the networks named under **compiled**).", ""]
    batches = sorted({batch for _, batch in results.latency})
    for name in dict.fromkeys(network for network, _ in results.latency):
        lines += [f"### {name}", ""]
        rows = []
        for variant in TORCHVISION + NETDSL:
            row = [variant]
            for batch in batches:
                t = results.latency.get((name, batch), {})
                row.append(f"{_ms(t[variant])} ({_ratio(t[variant], t['torchvision'])})" if variant in t else "—")
            rows.append(row)
        lines += _table(["variant", *[f"batch {batch} (ms)" for batch in batches]], rows) + [""]

    lines += ["### netdsl against the best hand-applied recipe", "",
              "The best of torchvision + `torch.compile` and torchvision + freeze + `optimize_for_inference` "
              "(the recipe), against `netdsl --optimize` (TorchScript, loaded with `netdsl.load`) and against "
              "the fastest netdsl artifact; below 1.0× netdsl is faster.", ""]
    rows = []
    recipes = TORCHVISION[1:3]
    for (name, batch), t in results.latency.items():
        recipe = min((v for v in recipes if v in t), key=lambda v: t[v])
        fastest = min((v for v in NETDSL if v in t), key=lambda v: t[v])
        rows.append([name, str(batch), f"{recipe.removeprefix('torchvision + ')} {_ms(t[recipe])}",
                     f"{_ms(t['netdsl --optimize'])} ({_ratio(t['netdsl --optimize'], t[recipe])})",
                     f"{fastest.removeprefix('netdsl ')} {_ms(t[fastest])} ({_ratio(t[fastest], t[recipe])})"])
    lines += _table(["network", "batch", "best recipe (ms)", "netdsl --optimize (ms)", "fastest netdsl (ms)"], rows)

    lines += ["", "### Preparing the variants", "",
              "Seconds to make each variant before its first call (export, compile, save and load; for "
              "torch.compile only the wrapper), and for torch.compile and AOTInductor the first call at "
              "each batch size (torch.compile compiles there). Cold caches: the run has its own inductor cache.", ""]
    rows = []
    for name, prepared in results.prepare.items():
        for variant in TORCHVISION[1:] + NETDSL[1:]:
            if (variant, None) in prepared:
                rows.append([name, variant, f"{prepared[variant, None]:.1f}"] +
                            [f"{prepared[variant, b]:.1f}" if (variant, b) in prepared else "" for b in batches])
    lines += _table(["network", "variant", "prepare (s)", *[f"first call, batch {b} (s)" for b in batches]], rows)

    lines += ["", "## GPU throughput", ""]
    if results.throughput:
        lines += ["bfloat16, channels-last, batch 64, eval; images per second.", ""]
        rows = [[name, mode, f"{t['torchvision']:,.0f}", f"{t['netdsl']:,.0f}", _ratio(t["netdsl"], t["torchvision"])]
                for (name, mode), t in results.throughput.items()]
        lines += _table(["network", "mode", "torchvision (img/s)", "netdsl (img/s)", "ratio"], rows)
    else:
        lines += ["No CUDA device on this machine: not measured (the code path runs where one is present)."]
    return "\n".join(lines) + "\n\n" + findings.rstrip() + "\n"


def kept_findings(path: Path | None) -> str:
    """The hand-written findings of an earlier results file, or a placeholder."""
    if path is not None and path.exists():
        text = path.read_text(encoding="utf-8")
        if FINDINGS in text:
            return text[text.index(FINDINGS):]
    return f"{FINDINGS}\n\n(To be written by hand after looking at the numbers.)\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small network, few repeats (a smoke run)")
    parser.add_argument("-o", "--output", help="results file (default: benchmarks/RESULTS.md; --quick: stdout)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime alike (default: torch's "
                        "choice, one per core); 1 is steadier on a machine other jobs are using")
    parser.add_argument("--compiled", default=",".join(COMPILED_NETWORKS),
                        help="networks that get the torch.compile and AOTInductor rows, comma-separated, or 'all' "
                        f"(default {','.join(COMPILED_NETWORKS)}: the five take over 10 minutes to compile here)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
    torch.manual_seed(0)
    if args.quick:
        names, repeats, batches = ["mobilenet_v2"], {"check": 3, "compile": 1, "latency": 1, "throughput": 3}, (1,)
    else:
        names, repeats, batches = NETWORKS, {"check": 5, "compile": 2, "latency": 5, "throughput": 20}, (1, 8)
    compiled = None if args.compiled == "all" else tuple(filter(None, args.compiled.split(",")))
    log = lambda message: print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)  # noqa: E731
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(workdir) / "inductor")  # cold: compile times are real
        results = run([torchvision_bench(name) for name in names], repeats, batches, Path(workdir), log, compiled)
        results.check_all = measure_check_all(ROOT / "networks", repeats["check"])
        results.check_command["resnet152"] = measure_check_command(ROOT / "networks" / "resnet152.net", repeats["check"])
        tenths = lambda low, high: [round(low + step / 10, 1) for step in range(round((high - low) * 10) + 1)]  # noqa: E731
        results.variants = measure_variants(ROOT / "networks" / "efficientnet.net",
                                            {"width": tenths(1.0, 2.0), "depth": tenths(1.0, 3.0)[::2]},
                                            1)
        log("a network importing many blocks")
        results.large_import = measure_large_import(10_000 if args.quick else 100_000, 1, Path(workdir))
    log(f"done in {time.perf_counter() - start:.0f} s")
    output = Path(args.output) if args.output else (None if args.quick else ROOT / "benchmarks" / "RESULTS.md")
    command = " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    info = machine(command)
    info["compiled"] = "all networks" if compiled is None else ", ".join(compiled)
    text = markdown(results, info, repeats, kept_findings(output))
    if output is None:
        print(text, end="")
    else:
        write_atomically(output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        log(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
