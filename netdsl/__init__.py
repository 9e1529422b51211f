"""netdsl: a declarative language for CNN architectures and its compiler to PyTorch.

Pipeline (one module per stage): parse → resolve → check → emit and draw, with the command line
(`netdsl.cli`) on top. The Python API, which never needs the command line:

    graph = netdsl.check("resnet50.net", classes=10)      # the annotated graph; no torch imported
    netdsl.analyse(graph).totals.activations               # the cost model
    netdsl.training(graph, amp="bfloat16").fit(80 * 2**30, "adam")  # the largest batch that fits
    netdsl.valid_inputs(graph).describe()                  # the input sizes it accepts
    model = netdsl.build("resnet50.net")                   # a torch.nn.Module
    netdsl.compile_file("resnet50.net", "r50.pt")          # a TorchScript (export, ONNX, .py) file
    netdsl.load("r50.pt")                                  # it, ready for inference (--optimize: oneDNN)
    netdsl.python_source(graph)                            # its standalone PyTorch source
    netdsl.to_dot(graph).source                            # a Graphviz drawing (needs graphviz)
"""

from .api import build, check, compile, compile_file, training
from .limits import Limits
from .errors import (
    NetDSLError, NetDSLImportError, NetDSLNameError, NetDSLSyntaxError, NetDSLTypeError, OptionError,
    OutputError, ParameterError, ShapeError,
)
from .graph import Network
from .sizes import valid_inputs

__version__ = "0.1.0"

__all__ = [
    "check", "build", "compile_file", "compile", "load", "analyse", "training", "to_dot", "python_source", "valid_inputs",
    "Limits", "Network", "NetDSLError", "NetDSLSyntaxError", "NetDSLNameError", "NetDSLTypeError",
    "NetDSLImportError", "ShapeError", "ParameterError", "OptionError", "OutputError",
]


# NOTE: [Lazy to_dot] A name of the API whose module `netdsl check` does not need is imported on
# first use: drawing needs the graphviz package, which `import netdsl` must not load; the cost
# model, the emitter and the loader are imported by the commands that use them.
_LAZY = {"to_dot": "draw", "analyse": "cost", "python_source": "emit", "load": "optimize"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netdsl' has no attribute {name!r}")
