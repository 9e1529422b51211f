"""The test suite's own machinery (tests/conftest.py): each network's tests in one worker."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import network_of

ROOT = Path(__file__).resolve().parent.parent


def test_network_of_reads_the_network_a_test_is_parametrized_with():
    assert network_of("tests/test_networks.py::test_training_step[resnet18]") == "resnet18"
    assert network_of("tests/test_fmt.py::test_formatting_keeps_every_layer[networks/vgg16.net]") == "vgg16"
    assert network_of("tests/test_fmt.py::test_messy[vgg16.net]") == "vgg16"
    assert network_of("tests/test_viewer.py::test_page_loads[googlenet-folded1]") == "googlenet"
    assert network_of("tests/test_check.py::test_the_memo_gives[input_shape1]") is None
    assert network_of("tests/test_cli.py::test_compile") is None
    assert network_of("tests/test_x.py::test_y[notanetwork]") is None


def test_the_tests_of_a_network_run_in_one_worker():
    """In parallel, a network's tests go to one worker (which builds it once); with xdist's
    `--dist loadgroup` under pytest 9 they were spread over both."""
    pytest.importorskip("xdist")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", "tests/test_fmt.py",
         "-k", "resnet18 or resnet34 or vgg11 or alexnet"],  # 3-4 tests each; no torch to import
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workers = collections.defaultdict(set)
    for worker, nodeid in re.findall(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (\S+)", result.stdout, re.MULTILINE):
        workers[network_of(nodeid)].add(worker)
    assert set(workers) >= {"resnet18", "resnet34", "vgg11", "alexnet"}, result.stdout[-3000:]
    assert all(len(used) == 1 for used in workers.values()), dict(workers)
