"""Selection at collection time: a test marked `@pytest.mark.reference("torchvision", ...)` runs
only for the networks (the `net` parameter) whose `# reference:` is of one of those kinds; the
others are deselected, not skipped, so the summary's skips are real ones."""

from __future__ import annotations

import functools

from netdsl.catalog import header

from zoo import NETWORKS


@functools.cache
def _reference_kind(name: str) -> str | None:
    return header((NETWORKS / f"{name}.net").read_text(encoding="utf-8"))[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "reference(*kinds): run only for networks whose reference is of these kinds")


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
