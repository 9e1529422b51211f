"""Resolve: the files a program is loaded from, strictly (every problem raised) or tolerantly
(what `--watch` and the language server need: everything that can be loaded, nothing raised)."""

from __future__ import annotations

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
