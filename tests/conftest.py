"""Selection at collection time: a test marked `@pytest.mark.reference("torchvision", ...)` runs
only for the networks (the `net` parameter) whose `# reference:` is of one of those kinds; the
others are deselected, not skipped, so the summary's skips are real ones.

In parallel (README: `python -m pytest -n auto`, pytest-xdist; `--dist loadgroup` is in
pyproject.toml): every test of one network, in any file, runs in the same worker, which builds
and checks that network once (`zoo.network`, the module-scoped `built`); and each worker's torch
gets its share of the cores."""

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


def _network(item) -> str | None:
    """The network file a test is parametrized with, by its stem, if any."""
    for value in getattr(getattr(item, "callspec", None), "params", {}).values():
        stem = value.stem if isinstance(value, Path) else value
        if isinstance(stem, str) and stem.isidentifier() and (NETWORKS / f"{stem}.net").is_file():
            return stem
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if (name := _network(item)) is not None:
            item.add_marker(pytest.mark.xdist_group(name))
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
