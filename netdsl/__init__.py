"""netdsl: a declarative language for CNN architectures and its compiler to PyTorch.

Pipeline (one module per stage): parse → resolve → check → emit, driven by `cli`.
"""

from .api import build, check, compile
from .limits import Limits
from .errors import (
    NetDSLError, NetDSLImportError, NetDSLNameError, NetDSLSyntaxError, NetDSLTypeError,
    ParameterError, ShapeError,
)
from .graph import Network
from .sizes import valid_inputs

__version__ = "0.1.0"

__all__ = [
    "build", "check", "compile", "Limits", "Network", "NetDSLError", "NetDSLSyntaxError",
    "NetDSLNameError", "NetDSLTypeError", "NetDSLImportError", "ShapeError", "ParameterError", "valid_inputs",
]
