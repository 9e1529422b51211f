"""File output shared by every command that writes one: atomic replacement of the target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | os.PathLike, write) -> None:
    """Calls `write(temporary_path)` in the target directory, then renames it over `path`."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    # The temporary name keeps the real suffix: some savers check it (torch.export.save wants .pt2).
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.", suffix=path.suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
