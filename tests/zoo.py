"""The networks of networks/ as the tests see them: each distinct network once.

A family file with a default member (`densenet.net` builds DenseNet-121 unless told otherwise)
emits exactly the module its member file does; the expensive oracles (torchvision parity,
training steps, receptive fields by gradient) then run once per distinct network, chosen at
collection time, and `tests/test_networks.py::test_twins_are_the_same_network` proves each twin
the same as the file that stands for it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import netdsl
from netdsl.emit import python_source
from netdsl.names import class_name

NETWORKS = Path(__file__).resolve().parent.parent / "networks"
ALL = sorted(NETWORKS.glob("*.net"))


def structure(path: Path) -> str:
    """The emitted module's source with nothing that names the file or the network: equal for two
    files exactly when they build the same module (class structure, literals, forward)."""
    network = netdsl.check(path)
    lines = [line for line in python_source(network).splitlines() if not line.startswith("#")]
    source = "\n".join(lines).replace(class_name(network.name), "NETWORK")
    return source.replace(f'"""{network.name}: ', '"""NETWORK: ')


@functools.cache
def twins() -> dict[Path, Path]:
    """{a file: the earlier-sorted, more specific file emitting the same module}. The one that stands
    for a group is the one with the longest name (`densenet121.net`, not `densenet.net`)."""
    groups: dict[str, list[Path]] = {}
    for path in ALL:
        groups.setdefault(structure(path), []).append(path)
    result = {}
    for paths in groups.values():
        keeper = max(paths, key=lambda p: (len(p.stem), p.stem))
        result.update({p: keeper for p in paths if p != keeper})
    return result


def distinct() -> list[Path]:
    """Every network file but the twins: each distinct network once."""
    return [path for path in ALL if path not in twins()]
