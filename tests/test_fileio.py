"""Writing output files (`netdsl.fileio`): whole or not at all, only over regular files, never over
the network's own sources, through symbolic links, keeping permissions, cleaning up after itself."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl import cli, fmt
from netdsl.errors import OutputError
from netdsl.fileio import write_atomically

TINY = "network tiny { input [3, 8, 8] conv(4, 3) relu }\n"


def _write(text: str):
    return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")


def _never_called(tmp):
    raise AssertionError("the write was started")


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.net"
    path.write_text(TINY)
    return path


def _one_line_error(capsys, path) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert str(path) in err
    return err


# ---- only regular files are replaced ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_fifo_or_a_directory_is_refused_not_replaced(tmp_path, kind):
    target = tmp_path / "out.pt"
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    with pytest.raises(OutputError, match=rf"cannot write {re.escape(str(target))}: it is a (FIFO|directory)"):
        write_atomically(target, _never_called)
    assert stat.S_ISFIFO(target.lstat().st_mode) if kind == "fifo" else target.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]


def test_compile_onto_a_fifo_is_a_one_line_error(tiny, tmp_path, capsys):
    fifo = tmp_path / "model.py"
    os.mkfifo(fifo)
    assert cli.main(["compile", str(tiny), "--format", "python", "-o", str(fifo)]) == cli.EXIT_USER
    assert "it is a FIFO (named pipe), not a regular file" in _one_line_error(capsys, fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_draw_onto_a_directory_is_a_one_line_error(tiny, tmp_path, capsys):
    directory = tmp_path / "out.dot"
    directory.mkdir()
    assert cli.main(["draw", str(tiny), "-o", str(directory)]) == cli.EXIT_USER
    assert "it is a directory, not a regular file" in _one_line_error(capsys, directory)
    assert directory.is_dir() and list(directory.iterdir()) == []


# ---- never over the network's own files ------------------------------------------------------

def test_compile_refuses_to_overwrite_its_input_or_an_import(tmp_path, capsys):
    (tmp_path / "lib.net").write_text("block unit { conv(4, 3) relu }\n")
    main = tmp_path / "main.net"
    main.write_text('import "lib.net"\nnetwork main { input [3, 8, 8] unit }\n')
    (tmp_path / "link.py").symlink_to(main)
    before = {p.name: p.read_text() for p in (main, tmp_path / "lib.net")}
    for output in (main, tmp_path / "lib.net", tmp_path / "link.py"):
        assert cli.main(["compile", str(main), "--format", "python", "-o", str(output)]) == cli.EXIT_USER
        assert "it is an input of this network" in _one_line_error(capsys, output)
    assert {p.name: p.read_text() for p in (main, tmp_path / "lib.net")} == before
    assert (tmp_path / "link.py").is_symlink()


def test_the_api_refuses_too(tiny):
    import netdsl

    with pytest.raises(OutputError, match="it is an input of this network"):
        netdsl.compile_file(tiny, tiny, format="python")
    assert tiny.read_text() == TINY


def test_draw_and_catalog_refuse_the_network_files(tiny, tmp_path, capsys):
    (tmp_path / "tiny.dot").symlink_to(tiny)
    assert cli.main(["draw", str(tiny), "-o", str(tmp_path / "tiny.dot")]) == cli.EXIT_USER
    _one_line_error(capsys, tmp_path / "tiny.dot")
    assert cli.main(["catalog", str(tmp_path), "-o", str(tiny)]) == cli.EXIT_USER
    _one_line_error(capsys, tiny)
    assert tiny.read_text() == TINY


# ---- temporary files -------------------------------------------------------------------------

def test_temporary_file_is_named_after_the_target_and_this_process(tmp_path):
    seen = []
    write_atomically(tmp_path / "model.pt2", lambda tmp: seen.append(Path(tmp)) or Path(tmp).write_bytes(b"x"))
    (temporary,) = seen
    assert temporary.parent == tmp_path
    assert temporary.name.startswith(f".model.pt2.netdsl-tmp.{os.getpid()}.") and temporary.suffix == ".pt2"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"]


_SLOW_WRITE = """
import signal, sys, time
from pathlib import Path
from netdsl.fileio import write_atomically

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the test runner set
signal.signal(signal.SIGTERM, signal.SIG_DFL)

def slow(tmp):
    Path(tmp).write_text("half a model")
    print("writing", flush=True)
    time.sleep(60)

write_atomically(sys.argv[1], slow)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_write_removes_the_temporary_file(tmp_path, signum):
    target = tmp_path / "model.pt"
    target.write_text("previous")
    process = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, str(target)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "writing\n"
        assert len(list(tmp_path.iterdir())) == 2  # the target and the temporary file
        process.send_signal(signum)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signum  # the signal still ends the process, as it would have
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert target.read_text() == "previous"


def test_signal_handlers_are_restored_after_the_write(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    during = []
    write_atomically(tmp_path / "a.txt", lambda tmp: during.append(signal.getsignal(signal.SIGTERM)))
    assert during[0] is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_leftovers_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead, alive = finished.pid, os.getpid()
    names = [f".model.pt.netdsl-tmp.{dead}.0a1b2c3d.pt", f".other.py.netdsl-tmp.{alive}.0a1b2c3d.py",
             ".model.pt.tmp.x7k2.pt", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("left over")
    write_atomically(tmp_path / "catalog.md", _write("fresh"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:] + ["catalog.md"])


# ---- permissions and links -------------------------------------------------------------------

def test_an_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "secret.pt"
    target.write_text("old")
    target.chmod(0o600)
    write_atomically(target, _write("new"))
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_new_file_gets_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "model.pt", _write("new"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "model.pt").stat().st_mode) == 0o644


def test_writing_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "model.py"
    real.write_text("old")
    link = tmp_path / "model.py"
    link.symlink_to(real)
    write_atomically(link, _write("new"))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["model.py"]


def test_fmt_formats_through_a_symlink(tmp_path, capsys):
    messy = "network n {input [3, 8, 8]   conv(4, 3)}\n"
    real = tmp_path / "real.net"
    real.write_text(messy)
    link = tmp_path / "link.net"
    link.symlink_to(real.name)
    assert cli.main(["fmt", str(link)]) == cli.EXIT_OK
    assert link.is_symlink() and os.readlink(link) == real.name
    assert real.read_text() == fmt.format_source(messy) != messy


# ---- errors on the output path ---------------------------------------------------------------

@pytest.mark.parametrize("command, output", [
    (["compile", "--format", "python"], "/nonexistent/x.py"),
    (["compile", "--format", "python"], ""),
    (["draw"], "/nonexistent/x.dot"),
    (["draw"], ""),
])
def test_an_unwritable_output_path_is_a_one_line_error(tiny, tmp_path, capsys, monkeypatch, command, output):
    monkeypatch.chdir(tmp_path)
    assert cli.main([command[0], str(tiny), *command[1:], "-o", output]) == cli.EXIT_USER
    shown = output or "''"
    assert _one_line_error(capsys, shown).startswith(f"error: cannot write {shown}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.net"]


def test_a_write_that_fails_with_an_os_error_names_the_path(tmp_path):
    def full(tmp):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError) as error:
        write_atomically(tmp_path / "model.pt", full)
    assert error.value.message == f"cannot write {tmp_path / 'model.pt'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


_FULL_DISK = """
import resource, signal, sys
from netdsl import cli
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_a_write_that_fills_the_disk_is_an_error_not_an_abort(tmp_path, suffix):
    """A file-size limit fails the write as a full disk does (see NOTE: [Full disks]): torch's own
    writer aborted the process (exit 134, a core dump) and left its temporary file."""
    source = tmp_path / "wide.net"
    source.write_text("network wide { input [64, 4, 4] conv(256, 3) }\n")  # 147,712 parameters
    target = tmp_path / f"wide{suffix}"
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, "compile", str(source), "-o", str(target)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == cli.EXIT_USER, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"error: cannot write {target}: File too large"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.net"]


def test_a_torchscript_file_that_fits_is_streamed_not_built_in_memory(tmp_path, monkeypatch):
    """torch.jit.save to a file object builds the whole archive in memory (two more copies of the
    weights: 1.5 GB more for convnext_large), so where the file fits it gets the path (NOTE: [Full
    disks]); where it might not (the file-size limit above, a nearly full disk) a Python file."""
    torch = pytest.importorskip("torch")
    import netdsl
    import netdsl.emit

    targets = []
    save = torch.jit.save
    monkeypatch.setattr(torch.jit, "save", lambda module, target, **kw: (targets.append(target), save(module, target, **kw)))
    source = tmp_path / "small.net"
    source.write_text("network small { input [3, 8, 8] conv(8, 3) }\n")
    netdsl.compile(source, tmp_path / "small.pt")
    assert len(targets) == 1 and isinstance(targets[0], str)  # the temporary file's path
    monkeypatch.setattr(netdsl.emit.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    netdsl.compile(source, tmp_path / "again.pt")
    assert len(targets) == 2 and not isinstance(targets[1], str)  # 1 kB free: through a Python file
    assert torch.jit.load(str(tmp_path / "again.pt")) is not None
