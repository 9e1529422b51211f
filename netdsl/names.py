"""Naming rules shared by the checker and the emitter: which labels may name a module, and how
generated Python names are made safe and unique (in the spirit of torch.fx's `_Namespace`)."""

from __future__ import annotations

import json
import keyword
from pathlib import Path

from .errors import NameError_, Span

# Names a module attribute must not take: every attribute of nn.Module and of an instance, read off
# torch itself into a data file (the checker never imports torch; a test keeps the file current).
MODULE_MEMBERS = frozenset(
    line for line in (Path(__file__).with_name("module_members.txt")).read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#"))
MAX_NAME = 200  # characters in one label


def check_label(name: str, span: Span) -> str:
    """`name` if it may name a module attribute, else a located `NameError_`. Any name PyTorch's
    `add_module` takes is allowed (`block1-0`, as RegNet's), except names of `nn.Module`'s own
    members and all-digit names, which are the positions of unlabelled layers."""
    if not name:
        raise NameError_("a layer name cannot be empty", span)
    if "." in name:
        raise NameError_(f"invalid layer name '{name}': a name cannot contain '.'", span,
                         hint="PyTorch separates the names in a module path with '.'")
    if len(name) > MAX_NAME or not name.isprintable() or any(c.isspace() for c in name):
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise NameError_(f"invalid layer name {shown!r}", span,
                         hint=f"names are up to {MAX_NAME} printable characters without spaces")
    if name.isdigit():
        raise NameError_(f"'{name}' cannot name a layer: digits alone name the unlabelled layers", span,
                         hint=f"use 'layer{name}' or another name")
    if name in MODULE_MEMBERS or name.startswith("__"):
        raise NameError_(f"'{name}' cannot name a layer: it is reserved by torch.nn.Module",
                         span, hint=f"use '{name}_' or another name")
    return name


def is_attribute(name: str) -> bool:
    """Whether `self.<name>` is valid Python for child `name` (else `getattr(self, "name")`)."""
    return name.isidentifier() and not keyword.iskeyword(name)


def string(name: str) -> str:
    """`name` as a double-quoted Python string literal (escaped; ASCII only)."""
    return json.dumps(name)


def unlabelled(position: int) -> str:
    """The name of an unlabelled child: its position among the module's children."""
    return str(position)


def attribute(name: str) -> str:
    """The Python expression for child `name` of `self`."""
    return f"self.{name}" if is_attribute(name) else f"getattr(self, {string(name)})"


class Namespace:
    """Unique, safe Python names: `fresh("out")` gives out, out2, out3, ...; a base ending in a
    digit gets a separator (branch1, branch1_2); keywords get a trailing underscore."""

    def __init__(self, taken=()):
        self.taken: set[str] = set(taken)

    def fresh(self, base: str) -> str:
        if keyword.iskeyword(base):
            base += "_"
        name, counter = base, 1
        while name in self.taken:
            counter += 1
            name = f"{base}_{counter}" if base[-1].isdigit() else f"{base}{counter}"
        self.taken.add(name)
        return name


def class_name(type_name: str) -> str:
    """A block's name as a Python class name: `bottleneck` → `Bottleneck`, `mb_conv` → `MbConv`."""
    name = "".join(part[:1].upper() + part[1:] for part in type_name.split("_") if part) or "Block"
    if not name[0].isalpha():
        name = f"Net{name}"
    if name in {"Tensor", "OrderedDict", "Optional", "List"} or keyword.iskeyword(name):
        name += "_"
    return name
