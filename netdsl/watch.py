"""`--watch`: a .net file and everything it imports → the command re-run after each change.

For people without a language-server editor: `netdsl check --watch FILE` re-checks on every
save. Modification times are polled, which needs no dependency and works on every file system
and with editors that save by writing a new file and renaming it. The set of watched files is
recomputed before each run, so an import added in an edit is watched from then on.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Container

from .resolve import load
from .text import plural

POLL_SECONDS = 0.3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def dependencies(path: str | Path, source: str | None = None) -> list[Path]:
    """`path` (with text `source`, if given) and every file it imports, directly or not.

    Never raises (`resolve.load`, tolerant): a file that does not parse is still a file to
    watch (its imports are simply not followed until it parses again), and a missing import
    is skipped."""
    return load(path, source, tolerant=True).files


def stamps(files: list[Path]) -> dict[Path, tuple[int, int] | None]:
    """Modification time and size of each file (None while it does not exist)."""
    found = {}
    for file in files:
        try:
            status = file.stat()
            found[file] = (status.st_mtime_ns, status.st_size)
        except OSError:
            found[file] = None
    return found


def watch(path: str, run_once: Callable[[], int], *, stop_on: Container[int] = (),
          interval: float = POLL_SECONDS) -> int:
    """Run `run_once` now and again after every change to `path` or its imports, until Ctrl-C
    (exit 130, quietly) or until it returns an exit code in `stop_on` (e.g. a usage error,
    which no edit of the file can fix). `run_once` reports its own errors."""
    try:
        while True:
            files = dependencies(path)
            before = stamps(files)
            print(f"--- {datetime.now():%H:%M:%S} {path}", file=sys.stderr, flush=True)
            code = run_once()
            sys.stdout.flush()
            if code in stop_on:
                return code
            print(f"--- watching {plural(len(files), 'file')} for changes (Ctrl-C to stop)", file=sys.stderr,
                  flush=True)
            wait_for_change(files, before, interval)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def wait_for_change(files: list[Path], before: dict, interval: float = POLL_SECONDS,
                    keep_waiting: Callable[[], bool] = lambda: True) -> bool:
    """True once the files differ from `before` and have stayed the same for one more poll, so a
    save caught half-written (truncated, then filled) is read once, complete; False as soon as
    `keep_waiting()`, asked after every poll, says to give up (a viewer's server shutting down)."""
    current = before
    while current == before:
        time.sleep(interval)
        if not keep_waiting():
            return False
        current = stamps(files)
    while True:
        time.sleep(interval)
        settled = stamps(files)
        if settled == current:
            return True
        current = settled
