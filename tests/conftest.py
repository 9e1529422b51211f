"""Selection at collection time: a test marked `@pytest.mark.reference("torchvision", ...)` runs
only for the networks (the `net` parameter) whose `# reference:` is of one of those kinds; the
others are deselected, not skipped, so the summary's skips are real ones.

In parallel (README: `python -m pytest -n auto`, pytest-xdist): every test of one network, in any
file, runs in the same worker, one after another, which builds and checks that network once
(`zoo.network`, the module-scoped `built`): `pytest_xdist_make_scheduler` below groups the tests by
the network their parameters name. (xdist's own `--dist loadgroup` renames the grouped tests'
node ids, which pytest 9 no longer lets a plugin do: with it, every test went its own way.) Each
worker's torch gets its share of the cores."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from netdsl.catalog import header

from zoo import NETWORKS

if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # two workers, each with OpenMP threads for every core, wait on each other's threads
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // int(workers))))


@functools.cache
def _reference_kind(name: str) -> str | None:
    return header((NETWORKS / f"{name}.net").read_text(encoding="utf-8"))[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "reference(*kinds): run only for networks whose reference is of these kinds")


@functools.cache
def _stems() -> frozenset[str]:
    return frozenset(path.stem for path in NETWORKS.glob("*.net"))


def network_of(nodeid: str) -> str | None:
    """The network a test's parameters name (`test_x[resnet18]`, `[networks/vgg16.net]`,
    `[googlenet-folded1]`), by its file's stem, if any."""
    name = nodeid.rpartition("::")[2]
    if "[" not in name or not name.endswith("]"):
        return None
    for part in name[name.index("[") + 1:-1].split("-"):
        stem = part.rpartition("/")[2].removesuffix(".net")
        if stem in _stems():
            return stem
    return None


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist runs the suite in one process
def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduler of groups, each network's tests one group (see the docstring above)."""
    from xdist.scheduler import LoadGroupScheduling

    class ByNetwork(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return network_of(nodeid) or nodeid

    return ByNetwork(config, log)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("reference")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or "net" not in callspec.params:
            keep.append(item)
        elif _reference_kind(callspec.params["net"]) in marker.args:
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


if _rss_log := os.environ.get("NETDSL_RSS_LOG"):
    import resource

    _peak = [0]

    def pytest_runtest_teardown(item, nextitem):
        """With NETDSL_RSS_LOG=FILE, a line per test that raised the process's peak RSS: which
        tests set the suite's memory peak (`sort -k2 -n FILE | tail`)."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        if peak > _peak[0]:
            _peak[0] = peak
            with open(_rss_log, "a", encoding="utf-8") as log:
                print(item.nodeid, peak // 1024, "MiB", os.getpid(), file=log)
