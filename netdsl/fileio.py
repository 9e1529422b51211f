"""Writing output files: a function that fills a path → that file in place, whole or not at all.

Every file netdsl writes (compiled models, Python source, diagrams, formatted `.net` files, the
network catalog) goes through `write_atomically`: the content goes to a temporary file beside
the target, which is then renamed over it, so a reader never sees half a file and a failed or
interrupted write leaves the old file as it was.
"""

# NOTE: [Atomic writes]
# - Only a regular file is ever replaced. A rename over a directory, FIFO, socket or device node
#   (`-o /dev/null` as root) would destroy it instead of writing to it, so `check_target` refuses.
# - A symbolic link is written through: the file it points to is replaced, in its own directory,
#   and the link stays a link. The replaced file keeps its permission bits (and, where allowed,
#   its owner and group); a new file gets the usual 0666 less the umask.
# - Temporary files are named `.NAME.netdsl-tmp.PID.TOKEN[.SUFFIX]` (the real suffix last: some
#   savers check it; torch.export.save wants .pt2). SIGTERM and SIGINT during the write remove it
#   before the process ends; a process killed outright (SIGKILL, power loss) leaves it behind,
#   and the next write into that directory removes every such file whose PID is not a running
#   process. A PID is only meaningful on this machine and in this PID namespace: a write by a
#   process that this one cannot see (another container sharing the directory) may lose its
#   temporary file and then fail; it never damages the target.

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import OutputError

TEMPORARY_MARK = ".netdsl-tmp."
_TEMPORARY = re.compile(rf"^\..*{re.escape(TEMPORARY_MARK)}(\d+)\.[0-9a-f]+(\.[^.]*)?$")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_target(path: str | os.PathLike, protect: Iterable[str | os.PathLike] = ()) -> Path:
    """The file that writing `path` replaces: `path`, or what its symbolic links lead to.

    Raises `OutputError` (naming `path`) when the name is empty, when that file exists but is not
    a regular file, or when it is one of the files in `protect` (e.g. the network's sources)."""
    name = os.fspath(path)
    if not name:
        raise OutputError("cannot write '': the output file name is empty")
    target = Path(os.path.realpath(name))
    try:
        status = target.stat()
    except FileNotFoundError:  # a new file: its directory must exist
        try:
            if not stat.S_ISDIR(target.parent.stat().st_mode):
                raise OutputError(f"cannot write {name}: {target.parent} is not a directory")
        except OSError as error:
            raise OutputError(f"cannot write {name}: {error.strerror or error}") from None
        return target
    except OSError as error:
        raise OutputError(f"cannot write {name}: {error.strerror or error}") from None
    if not stat.S_ISREG(status.st_mode):
        raise OutputError(f"cannot write {name}: it is {kind_of(status.st_mode)}, not a regular file")
    for source in protect:
        try:
            same = os.path.samestat(status, os.stat(source))
        except OSError:
            continue
        if same:
            shown = "" if Path(name).resolve() == Path(source).resolve() else f" ({source})"
            raise OutputError(f"cannot write {name}: it is an input of this network{shown}; "
                              "choose another output file")
    return target


def kind_of(mode: int) -> str:
    """What a file of this `st_mode` is, in words: `a directory`, `a FIFO (named pipe)`, `a regular file`."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "not a file")


def write_atomically(path: str | os.PathLike, write: Callable[[str], object],
                     protect: Iterable[str | os.PathLike] = ()) -> None:
    """Calls `write(temporary_path)` beside the file `path` names, then renames the temporary file
    over it (see NOTE: [Atomic writes]). An `OutputError` names `path` when it cannot be written."""
    name = os.fspath(path)
    target = check_target(path, protect)
    remove_leftovers(target.parent)
    temporary = target.parent / f".{target.name}{TEMPORARY_MARK}{os.getpid()}.{secrets.token_hex(4)}{target.suffix}"
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise OutputError(f"cannot write {name}: {error.strerror or error}") from None
    try:
        with _removed_on_signal(temporary):
            write(str(temporary))
            _copy_permissions(target, temporary)
            os.replace(temporary, target)
    except BaseException as error:
        _remove(temporary)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write {name}: {error.strerror or error}") from error
        raise


def remove_leftovers(directory: str | os.PathLike) -> None:
    """Removes the temporary files that writes by processes no longer running left in `directory`."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or _running(int(match[1])):
            continue
        leftover = Path(directory) / name
        try:
            if stat.S_ISREG(leftover.lstat().st_mode):
                leftover.unlink()
        except OSError:
            continue


def _running(pid: int) -> bool:
    """Whether `pid` may be a running process (when in doubt, yes: its file is left alone)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # e.g. PermissionError: it exists, and is someone else's
        return True
    return True


def _copy_permissions(target: Path, temporary: Path) -> None:
    """Gives `temporary` the permissions `target` has, or a new file's (0666 less the umask)."""
    try:
        status = target.stat()
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        return
    os.chmod(temporary, stat.S_IMODE(status.st_mode))
    ours = temporary.stat()
    if (ours.st_uid, ours.st_gid) != (status.st_uid, status.st_gid):
        with contextlib.suppress(OSError):  # only root may give a file away; a group change may be allowed
            os.chown(temporary, status.st_uid, status.st_gid)
        os.chmod(temporary, stat.S_IMODE(status.st_mode))  # chown clears set-user-ID and set-group-ID


@contextlib.contextmanager
def _removed_on_signal(temporary: Path) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT remove `temporary` before they end the process.

    A Python handler already installed (SIGINT's KeyboardInterrupt) is called as before: the
    exception it raises removes the file on its way out. Signals only reach the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame) -> None:
        earlier = previous[signum]
        if callable(earlier):
            earlier(signum, frame)
            return
        _remove(temporary)  # the default action: the process ends now, as it would have
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for signum in _SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN or current is None:  # ignored, or set outside Python: left as it is
            continue
        previous[signum] = current
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
