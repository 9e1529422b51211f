"""`netdsl calibrate`: this machine, measured with torch → a device `Profile` for `summary --bound`.

Peak FLOP/s per dtype from square matrix products (the size doubled until one product takes a
good fraction of a second; the fastest of many tries at each size), memory bandwidth from copies,
additions and in-place scalings (bytes read plus bytes written) at working sets from 256 KiB (in
the caches) to 256 MiB (far beyond them): NOTE: [Cache bandwidth] in netdsl/devices.py. Imports
torch; the CLI loads it only for this command.
"""

from __future__ import annotations

import datetime
import platform
import time

from .devices import DTYPES, Profile
from .text import byte_text, human

REPEATS = 3  # best of at least: a measurement only errs slow (other work, a cold cache), so the fastest is kept
MATMUL_SECONDS = 0.5  # the size doubles while a product would take at most this long; each size is timed half as long
COPY_SECONDS = 0.001  # each timing of the bandwidth runs the operation this long at least
COPY_BUDGET = 0.15  # seconds of timings per operation and size
LADDER = tuple(2**power for power in range(18, 29, 2))  # bytes moved: 256 KiB ... 256 MiB
QUICK_LADDER = (2**16, 2**18, 2**20)
LARGEST = {"cpu": 4096, "cuda": 16384}


class Unavailable(Exception):
    """The device asked for cannot be measured here (no CUDA device)."""


def measure(name: str, device: str = "cpu", threads: int | None = None, quick: bool = False) -> Profile:
    """A profile of `device` on this machine, named `name`; `quick` measures tiny sizes (a test's)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise Unavailable("--device cuda: no CUDA device is available")
    if threads is not None:
        torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 convolutions use TF32 by default (cuDNN), so may matmuls
    try:
        matmuls = {dtype: rate for dtype in DTYPES
                   if (rate := _matmul(torch, device, getattr(torch, dtype), sync, quick)) is not None}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    ladder = [(size, _bandwidth(torch, device, size, sync, 0.002 if quick else COPY_BUDGET))
              for size in (QUICK_LADDER if quick else LADDER)]
    floor = matmuls["float32"][0]
    # a low-precision product may run through float32 (a library converting), so its peak is never below float32's
    peaks = {dtype: max(rate, floor) for dtype, (rate, _) in matmuls.items()}
    what = torch.cuda.get_device_name() if device == "cuda" else (_cpu_name() or platform.machine())
    threads_used = torch.get_num_threads()
    label = what if device == "cuda" else f"{what}, {threads_used} thread{'s' if threads_used > 1 else ''}"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source = (f"measured by netdsl calibrate{' --quick' if quick else ''} on {now} with torch {torch.__version__}: "
              f"the fastest of repeated square matmuls per dtype and size, copies, additions and in-place scalings moving "
              f"{byte_text(ladder[0][0])} to {byte_text(ladder[-1][0])}")
    measured = {"device": device, "name": what, "threads": threads_used, "torch": torch.__version__, "date": now,
                "quick": quick, "matmul": {dtype: {"flops": rate, "n": size} for dtype, (rate, size) in matmuls.items()},
                "float32_matmul": "TF32 allowed" if device == "cuda" else "float32"}
    return Profile(name, label, peaks, ladder[-1][1], source, cache=tuple(ladder), measured=measured)


def report(profile: Profile) -> str:
    """What `calibrate` measured, in lines."""
    measured = profile.measured
    products = ", ".join(f"{dtype} {human(int(entry['flops']))}FLOP/s (n = {entry['n']})"
                         for dtype, entry in measured["matmul"].items())
    raised = [dtype for dtype, entry in measured["matmul"].items() if profile.peak_flops[dtype] > entry["flops"]]
    lines = [f"calibrated {measured['device']}: {profile.label}, torch {measured['torch']}",
             f"  matmul: {products}"]
    if raised:
        lines.append(f"  {', '.join(raised)}: slower than float32 here; the profile's peak is float32's "
                     f"({human(int(profile.peak_flops['float32']))}FLOP/s), which a library converting could reach")
    lines.append(f"  bandwidth: {byte_text(int(profile.bandwidth))}/s (read + written, copies, additions and in-place scalings moving "
                 f"{byte_text(profile.cache[-1][0])}); smaller working sets: "
                 + ", ".join(f"{byte_text(size)} {byte_text(int(rate))}/s" for size, rate in profile.cache[:-1]))
    lines.append("  measured now: other work on the machine makes every number lower, and so the bounds")
    return "\n".join(lines)


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _matmul(torch, device: str, dtype, sync, quick: bool) -> tuple[float, int] | None:
    """(best FLOP/s, at size n) of n x n products, or None where `dtype` cannot multiply on `device`."""
    size, largest, budget = 32, (128 if quick else LARGEST[device]), (0.002 if quick else MATMUL_SECONDS)
    best = (0.0, size)
    try:
        while True:
            a = torch.randn(size, size, device=device).to(dtype)
            b = torch.randn(size, size, device=device).to(dtype)
            torch.mm(a, b)  # warm up: the library's first call at a size picks its kernel
            sync()
            times, spent = [], 0.0
            while len(times) < REPEATS or spent < budget / 2:  # many tries at a small size: one runs undisturbed
                times.append(_timed(lambda: torch.mm(a, b), sync))
                spent += times[-1]
            seconds = min(times)
            rate = 2 * size**3 / seconds
            best = max(best, (rate, size))
            if size * 2 > largest or seconds * 8 > budget:
                return best
            size *= 2
    except (RuntimeError, TypeError):  # no kernel for this dtype on this device
        return None


def _bandwidth(torch, device: str, moved: int, sync, budget: float) -> float:
    """The best bytes/s (read + written) of a copy, an addition and an in-place scaling, each moving
    `moved` bytes a call. The copy and the addition write into memory they do not read, which a CPU
    first fetches (write-allocate): they move a third more than they count; an in-place operation
    (ReLU in place, `out += identity`) does not, and reaches the higher rate."""
    elements = max(moved // 8, 1)  # float32: a copy reads and writes 4 bytes per element
    source, target = torch.rand(elements, device=device), torch.empty(elements, device=device)
    third = max(moved // 12, 1)  # an addition reads two and writes one
    a, b, c = (torch.rand(third, device=device) for _ in range(3))
    scaled = torch.rand(elements, device=device)
    rates = []
    for operation, nbytes in ((lambda: target.copy_(source), 8 * elements),
                              (lambda: torch.add(a, b, out=c), 12 * third),
                              (lambda: scaled.mul_(1.0), 8 * elements)):
        operation()
        sync()
        calls = max(1, int(COPY_SECONDS / max(_timed(operation, sync), 1e-7)))
        times, spent = [], 0.0
        while len(times) < REPEATS + 2 or spent < budget:  # many tries: the fastest ran undisturbed
            times.append(_timed(lambda: [operation() for _ in range(calls)], sync))
            spent += times[-1]
        rates.append(calls * nbytes / min(times))
    return max(rates)


def _timed(run, sync) -> float:
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start
