"""An example netdsl plugin: `learned_scale(init=1.0)`, a learned factor per channel.

The op is declared with the same fields as a built-in (netdsl/layers.py); its torch module lives
in `netdsl_example_ops.modules`, which netdsl imports only when it builds or emits a model. This
module itself imports nothing heavy: `netdsl check` stays free of torch.
"""

from netdsl.layers import Emission, LayerDef, LayerProblem, Param
from netdsl.text import shape_text


def _shape(in_shape, args):
    if len(in_shape) != 3:
        raise LayerProblem(f"learned_scale expects a [channels, height, width] input, got {shape_text(in_shape)}")
    return in_shape


LEARNED_SCALE = LayerDef(
    name="learned_scale",
    doc="Multiplies each channel by a learned factor, initially `init` (a plugin's op: netdsl-example-ops).",
    params=(Param("init", "float", 1.0, doc="the factors' initial value"),),
    shape=_shape,
    count=lambda in_shape, args: in_shape[0],
    macs=lambda in_shape, out_shape, args: 0,  # an element-wise product, like batch norm's: not counted
    torch=lambda in_shape, args: Emission("LearnedScale", (in_shape[0],), {"init": args["init"]},
                                          module="netdsl_example_ops.modules"),
    family="norm",
)

OPS = [LEARNED_SCALE]
