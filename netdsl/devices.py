"""Device profiles: a device's name → its peak FLOP/s per dtype, memory bandwidth and memory.

The profiles netdsl ships are one table, `devices.json` beside this module, each number with the
datasheet it comes from; `netdsl calibrate` writes measured ones as JSON files of the same form
into `profiles_dir()`. `find` turns what a user wrote (`h100`, a calibrated profile's name, a
path to a JSON file) into a `Profile`. Never imports torch; docs/cost.md, "Latency lower bounds".
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OptionError

DTYPES = ("float32", "bfloat16", "float16")  # what a profile may give a peak for (summary's --dtype)
TABLE = Path(__file__).resolve().parent / "devices.json"
LOCAL_DEFAULT = "local"  # the name `netdsl calibrate` gives a profile unless told otherwise


@dataclass(frozen=True)
class Profile:
    """What bounds a layer's time on a device: `peak_flops[dtype]` (FLOP/s) and `bandwidth`
    (bytes/s of memory traffic, read and written). A measured profile may also give `cache`:
    (bytes moved, bytes/s) for operations small enough to stay in the caches, smallest first."""

    name: str
    label: str  # what the device is, in words
    peak_flops: dict[str, float]
    bandwidth: float
    source: str  # where the numbers come from: a datasheet, or `netdsl calibrate` on a machine
    memory_gib: float | None = None
    cache: tuple[tuple[int, float], ...] = ()
    measured: dict = field(default_factory=dict)  # a calibrated profile's record: device, threads, torch, ...

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s at `dtype`; an `OptionError` where the profile has none."""
        if dtype not in self.peak_flops:
            raise OptionError(f"profile '{self.name}' ({self.label}) gives no {dtype} peak (it has "
                              f"{', '.join(self.peak_flops)}); choose another dtype")
        return self.peak_flops[dtype]

    def bandwidth_for(self, moved: int) -> float:
        """The most bytes/s an operation moving `moved` bytes can reach (NOTE: [Cache bandwidth])."""
        if not self.cache:
            return self.bandwidth
        ceiling, best = [], self.bandwidth
        for size, rate in reversed(self.cache):  # largest first: a smaller operation is at least as fast
            best = max(best, rate)
            ceiling.append((size, best))
        fitting = [rate for size, rate in ceiling if size <= moved]
        return fitting[0] if fitting else ceiling[-1][1]

    def to_json(self) -> dict:
        report = {"label": self.label, "peak_flops": dict(self.peak_flops), "bandwidth": self.bandwidth,
                  "source": self.source}
        if self.memory_gib is not None:
            report["memory_gib"] = self.memory_gib
        if self.cache:
            report["cache_bandwidth"] = [list(point) for point in self.cache]
        if self.measured:
            report["measured"] = self.measured
        return report

    @classmethod
    def from_json(cls, name: str, data, where: str) -> "Profile":
        """A profile from its JSON object; an `OptionError` naming `where` when it is malformed."""
        def bad(problem: str) -> OptionError:
            return OptionError(f"{where}: not a device profile: {problem}")

        if not isinstance(data, dict):
            raise bad("expected a JSON object")
        peaks = data.get("peak_flops")
        if not isinstance(peaks, dict) or not peaks:
            raise bad("'peak_flops' must map dtypes to FLOP/s, e.g. {\"float32\": 6e13}")
        for dtype, rate in peaks.items():
            if dtype not in DTYPES:
                raise bad(f"'peak_flops' names {dtype!r}; known dtypes: {', '.join(DTYPES)}")
            if not _positive(rate):
                raise bad(f"'peak_flops'.{dtype} must be a positive number, got {rate!r}")
        if not _positive(data.get("bandwidth")):
            raise bad(f"'bandwidth' must be a positive number of bytes/s, got {data.get('bandwidth')!r}")
        cache = data.get("cache_bandwidth", [])
        if not isinstance(cache, list) or not all(
                isinstance(point, list) and len(point) == 2 and _positive(point[0]) and _positive(point[1])
                for point in cache):
            raise bad("'cache_bandwidth' must be a list of [bytes moved, bytes/s] pairs")
        memory = data.get("memory_gib")
        if memory is not None and not _positive(memory):
            raise bad(f"'memory_gib' must be a positive number, got {memory!r}")
        return cls(name, str(data.get("label", name)), {dtype: float(rate) for dtype, rate in peaks.items()},
                   float(data["bandwidth"]), str(data.get("source", where)), memory,
                   tuple(sorted((int(size), float(rate)) for size, rate in cache)), dict(data.get("measured", {})))


# NOTE: [Cache bandwidth]
# A measured profile's `bandwidth` is a large copy's, a working set far beyond the caches, as the
# datasheets' is DRAM's. On a CPU an operation moving a few megabytes runs in the caches, 3-5
# times faster (docs/cost.md shows a measured ladder), so a bound at DRAM bandwidth
# would not be a bound for it. `netdsl calibrate` measures the same copy at sizes from 256 KiB up
# (`cache_bandwidth`, up to the large copy itself), and an operation moving `moved` bytes is bounded
# by the fastest rate measured at any size from the largest measured size not above `moved` upwards: the rate can only fall
# as the working set grows, so this takes the measurement's noise the safe way. The datasheet
# profiles have no such ladder: on a GPU a layer whose tensors stay in the L2 cache (40-50 MB on
# an A100 or H100) can beat their bound, which is said where the bound is printed (docs/cost.md).


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _shipped() -> dict[str, Profile]:
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    return {name: Profile.from_json(name, data, f"{TABLE.name}: {name}") for name, data in table["profiles"].items()}


SHIPPED: dict[str, Profile] = _shipped()


def profiles_dir() -> Path:
    """Where `netdsl calibrate` writes profiles: `$XDG_CONFIG_HOME/netdsl/profiles` (default
    `~/.config/netdsl/profiles`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "netdsl" / "profiles"


def local_names() -> list[str]:
    """The calibrated profiles in `profiles_dir()`, by name."""
    try:
        return sorted(path.stem for path in profiles_dir().glob("*.json") if path.is_file())
    except OSError:
        return []


def known_names() -> list[str]:
    return list(SHIPPED) + [name for name in local_names() if name not in SHIPPED]


def load(path: str | os.PathLike, name: str | None = None) -> Profile:
    """The profile in the JSON file `path`; an `OptionError` when it cannot be read or is malformed."""
    shown = os.fspath(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise OptionError(f"cannot read profile {shown}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OptionError(f"{shown}: not a device profile: not valid JSON ({error})") from None
    return Profile.from_json(name or Path(path).stem, data, shown)


def find(text: str) -> Profile:
    """The profile `text` names: a shipped device (`h100`), a calibrated profile in `profiles_dir()`
    (`local`), or a path to a profile's JSON file. Unknown: an `OptionError` listing the names."""
    spelled = text.strip()
    if spelled.lower() in SHIPPED:
        return SHIPPED[spelled.lower()]
    if spelled.endswith(".json") or os.sep in spelled or (os.altsep and os.altsep in spelled):
        return load(spelled)
    local = profiles_dir() / f"{spelled}.json"
    if spelled and local.is_file():
        return load(local, spelled)
    raise OptionError(f"no device profile {text!r}: known profiles are {', '.join(known_names())}; "
                      f"or give a profile's .json file (netdsl calibrate writes one to {profiles_dir()})")
