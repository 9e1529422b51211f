"""Resolve: the files a program is loaded from, strictly (every problem raised) or tolerantly
(what `--watch` and the language server need: everything that can be loaded, nothing raised)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl import resolve
from netdsl.errors import ImportError_, NameError_, NetDSLError, SyntaxError_
from netdsl.parse import parse

STD_BLOCKS = Path(resolve.__file__).resolve().parent / "std" / "blocks.net"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_program_lists_the_files_it_read_in_load_order(tmp_path):
    write(tmp_path / "sub" / "deep.net", 'import "std/blocks.net"\nblock deep { relu }\n')
    write(tmp_path / "lib.net", 'import "sub/deep.net"\nblock unit { deep }\n')
    write(tmp_path / "other.net", 'import "sub/deep.net"\nblock other { relu }\n')  # read once
    main = write(tmp_path / "main.net", 'import "lib.net"\nimport "other.net"\nnetwork n { input [3, 8, 8] unit }\n')
    program = resolve.load(main)
    assert program.files == [(tmp_path / name).resolve() for name in ("main.net", "lib.net", "sub/deep.net")] + [
        STD_BLOCKS, (tmp_path / "other.net").resolve()]
    assert resolve.load(main, tolerant=True).files == program.files


@pytest.mark.parametrize("text, error", [
    ('import "missing.net"\nblock b { relu }\n', ImportError_),
    ("block b { relu\n", SyntaxError_),
    ('import "main.net"\nblock b { relu }\n', ImportError_),  # a cycle
    ("block b { relu }\nblock b { sigmoid }\n", NameError_),  # the first one stays
])
def test_tolerant_loading_keeps_what_it_can(tmp_path, text, error):
    lib = write(tmp_path / "lib.net", text)
    main = write(tmp_path / "main.net", 'import "lib.net"\nblock unit { conv(4, 3) }\nnetwork n { input [3, 8, 8] unit }\n')
    with pytest.raises(error):
        resolve.load(main)
    program = resolve.load(main, tolerant=True)
    assert program.files == [main.resolve(), lib.resolve()]
    assert {"unit", "n"} <= set(program.decls)
    assert [decl.name for decl in program.own] == ["unit", "n"]
    assert ("b" in program.decls) == (error is not SyntaxError_)  # a file that parses gives what it declares


def test_tolerant_loading_of_a_missing_or_unreadable_file(tmp_path):
    assert resolve.load(tmp_path / "absent.net", tolerant=True).files == [(tmp_path / "absent.net").resolve()]
    (tmp_path / "binary.net").write_bytes(b"block b { relu }\xff\n")
    program = resolve.load(tmp_path / "binary.net", tolerant=True)
    assert program.files == [(tmp_path / "binary.net").resolve()] and program.decls == {}


def test_read_source_and_find_import_are_located(tmp_path):
    with pytest.raises(NetDSLError, match="no such file: "):
        resolve.read_source(str(tmp_path / "absent.net"))
    main = write(tmp_path / "main.net", 'import "lib.net"\nimport "gone.net"\n')
    lib = write(tmp_path / "lib.net", "block b { relu }\n")
    found, missing = parse(main.read_text(), str(main)).imports
    assert resolve.find_import(found, str(main)) == lib
    with pytest.raises(ImportError_, match="cannot find 'gone.net'") as error:
        resolve.find_import(missing, str(main))
    assert error.value.span.line == 2


# ---- what may be read: the main file and every import by the same rules (issue 13 items 11, 19)

@pytest.mark.parametrize("make, message", [
    (lambda path: __import__("os").mkfifo(path), "it is a FIFO (named pipe), not a regular file"),
    (lambda path: path.mkdir(), "it is a directory, not a regular file"),
    (lambda path: path.write_bytes(b" " * (resolve.SOURCE_BYTES + 1)), "it is larger than 16 MiB"),
])
def test_main_file_and_imports_must_be_small_regular_files(tmp_path, make, message):
    odd = tmp_path / "odd.net"
    make(odd)
    with pytest.raises(NetDSLError, match=re.escape(message)) as caught:
        resolve.load(odd)
    assert (caught.value.span.file, caught.value.span.line) == (str(odd), 1)
    main = write(tmp_path / "main.net", 'import "odd.net"\nnetwork n { input [3] }\n')
    expected = message if "larger" in message else f"cannot import 'odd.net': {message}"
    with pytest.raises(NetDSLError, match=re.escape(expected)) as caught:
        resolve.load(main)
    assert (caught.value.span.file, caught.value.span.line) == (str(main), 1)


def test_device_as_main_file_is_refused_from_the_cli():
    for command in ("check", "fmt"):
        result = subprocess.run([sys.executable, "-m", "netdsl", command, "/dev/zero"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        assert result.stderr == "/dev/zero:1:1: error: cannot read /dev/zero: it is a character device, not a regular file\n"


def test_imports_resolve_through_links_to_real_net_files_only(tmp_path):
    secret = write(tmp_path / "secret.txt", "top secret first line\n")
    (tmp_path / "leak.net").symlink_to(secret)
    real = write(tmp_path / "lib" / "blocks.net", "block b { relu }\n")
    (tmp_path / "alias.net").symlink_to(real)
    main = write(tmp_path / "main.net", 'import "alias.net"\nnetwork n { input [3, 4, 4]  b }\n')
    program = resolve.load(main)
    assert program.files == [main.resolve(), real.resolve()]
    write(main, 'import "leak.net"\nnetwork n { input [3] }\n')
    with pytest.raises(ImportError_, match="it is a link to a file that is not a .net file") as caught:
        resolve.load(main)
    assert "secret" not in caught.value.format()


def test_std_imports_stay_in_the_standard_library(tmp_path):
    write(tmp_path / "std" / "local.net", "block b { relu }\n")  # a local std/ is not the standard library
    outside = Path(resolve.__file__).resolve().parent.parent / "networks" / "resnet18.net"
    for path, message in [("std/local.net", "cannot find 'std/local.net'"),
                          ("std/../../networks/resnet18.net", "it leads out of the standard library")]:
        main = write(tmp_path / "main.net", f'import "{path}"\nnetwork n {{ input [3] }}\n')
        if "leads" in message and not outside.is_file():
            continue
        with pytest.raises(ImportError_, match=message):
            resolve.load(main)


def test_an_import_name_with_a_nul_is_not_found(tmp_path):
    """Found by the fuzz run of issue 13: `stat` raises ValueError, not OSError, for a NUL in a name."""
    main = write(tmp_path / "main.net", 'import "a\x00b.net"\nnetwork n { input [3] }\n')
    with pytest.raises(ImportError_, match="cannot find 'a\x00b.net'"):
        resolve.load(main)
    with pytest.raises(NetDSLError, match="cannot read a\x00b.net: embedded null byte"):
        resolve.read_source("a\x00b.net")
