"""The networks of networks/ as the tests see them: each distinct network once.

A family file with a default member (`densenet.net` builds DenseNet-121 unless told otherwise)
emits exactly the module its member file does; the expensive oracles (torchvision parity,
training steps, receptive fields by gradient) then run once per distinct network, chosen at
collection time, and `tests/test_networks.py::test_twins_are_the_same_network` proves each twin
the same as the file that stands for it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from pathlib import Path

import netdsl
from netdsl.emit import python_source
from netdsl.names import class_name
from netdsl.sizes import valid_inputs

NETWORKS = Path(__file__).resolve().parent.parent / "networks"
ALL = sorted(NETWORKS.glob("*.net"))


# Above this many parameters a network is held to its parameter count and its state_dict keys and
# shapes (compared on the meta device), not built and run: its weights, gradients and references
# would take the suite's memory past what a 24 GB machine gives it (regnet_y_128gf: 2.6 GB a copy).
BIG = 200_000_000


@functools.cache
def network(path: Path):
    """The checked network of a file, once per test session."""
    return netdsl.check(path)


def big(path: Path) -> bool:
    return network(path).params > BIG


def structure(path: Path) -> str:
    """The emitted module's source with nothing that names the file or the network: equal for two
    files exactly when they build the same module (class structure, literals, forward)."""
    network_ = network(path)
    lines = [line for line in python_source(network_).splitlines() if not line.startswith("#")]
    source = "\n".join(lines).replace(class_name(network_.name), "NETWORK")
    return source.replace(f'"""{network_.name}: ', '"""NETWORK: ')


@functools.cache
def twins() -> dict[Path, Path]:
    """{a file: the earlier-sorted, more specific file emitting the same module}. The one that stands
    for a group is the one with the longest name (`densenet121.net`, not `densenet.net`)."""
    alike: dict[tuple, list[Path]] = {}  # the same module has the same counts: only those are compared
    for path in ALL:
        checked = network(path)
        alike.setdefault((checked.params, checked.macs, checked.input_shape), []).append(path)
    groups: dict[str, list[Path]] = {}
    for path in (path for paths in alike.values() if len(paths) > 1 for path in paths):
        groups.setdefault(structure(path), []).append(path)
    result = {}
    for paths in groups.values():
        keeper = max(paths, key=lambda p: (len(p.stem), p.stem))
        result.update({p: keeper for p in paths if p != keeper})
    return result


def distinct() -> list[Path]:
    """Every network file but the twins: each distinct network once."""
    return [path for path in ALL if path not in twins()]


@functools.cache
def smallest(name: str):
    """The network checked at the smallest input it accepts (every op computes there as at the
    declared size, on a fraction of the pixels); where the sizes are not analysed (the network reads
    its input's size: NASNet), at the smallest square of 32 + 16k that checks."""
    path = NETWORKS / f"{name}.net"
    checked = network(path)
    if len(checked.input_shape) != 3:
        return checked
    sizes = valid_inputs(checked)
    if not sizes.skipped and checked.reads_input_size is None:
        return netdsl.check(path, input_shape=(checked.input_shape[0],) + tuple(d.minimum for d in sizes.dimensions))
    for size in range(32, checked.input_shape[1], 16):
        try:
            return netdsl.check(path, input_shape=(checked.input_shape[0], size, size))
        except netdsl.NetDSLError:
            continue
    return checked


def uninitialized(network, source: str | None = None):
    """`network`'s module (from `source`, else the usual emitted source) with its tensors allocated
    on the CPU but not initialized: built on the meta device, so no random initialization is paid
    for where the test sets every tensor itself."""
    import torch

    from netdsl.emit import build

    with torch.device("meta"):
        model = build(network, source)
    return model.to_empty(device="cpu")


def constant(model, value=lambda module, name, tensor: 0.0, dtype=None):
    """`model` (built on any device, the meta device included) with every parameter and buffer
    replaced by one number expanded to its shape, `value(module, name, tensor)`, in `dtype` (or the
    tensor's own): one element of storage per tensor, so that a 600 M-parameter network runs in the
    memory of its activations (an op that needs a dense weight copies one layer's, while it runs).
    For the oracles that need the computation and not the weights: MAC counts, gradient supports."""
    import torch

    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                kind = tensor.dtype if dtype is None or not tensor.is_floating_point() else dtype
                fixed = torch.full((), value(module, name, tensor), dtype=kind).expand(tensor.shape)
                table[name] = torch.nn.Parameter(fixed, requires_grad=False) if table is module._parameters else fixed
    return model


@contextlib.contextmanager
def empty_on_meta():
    """Modules constructed inside allocate their `torch.empty` tensors (weights, before their
    initialization) on the meta device, and everything else where it would be: unlike
    `torch.device("meta")`, a constructor may still compute with tensors (torchvision's RegNet
    derives its widths with them). For tests that need only the shapes (`constant` replaces the
    weights; a big reference is held to its count and keys)."""
    import torch
    from torch.overrides import TorchFunctionMode

    class EmptyOnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.empty and kwargs.get("device") is None:
                kwargs = {**kwargs, "device": "meta"}
            return func(*args, **kwargs)

    with EmptyOnMeta():
        yield


def as_in_a_terminal() -> None:
    """`preexec_fn` for a child that a test interrupts with SIGINT: Ctrl-C's default action, as in
    a terminal, whatever the test runner inherited (a shell starts background jobs with SIGINT
    ignored, and a child that inherits that keeps ignoring it, as it should)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def release_memory() -> None:
    """What a network's tests made, given back before the next network's: cycles collected, freed
    pages returned to the system (glibc keeps them in its arenas otherwise: the suite's peak would
    be the sum of every network's leftovers, not the largest network's).

    Whatever survives the collection is frozen (`gc.freeze`): the session's caches (every checked
    graph, torch's own objects) are then never scanned again. A full collection of them took
    0.2-0.3 s, and the suite collects a few hundred times."""
    gc.collect()
    gc.freeze()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
