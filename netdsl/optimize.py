"""Inference optimizations (`netdsl compile --optimize`): a built model and its checked graph →
the same model in eval mode with every BatchNorm that directly follows a convolution folded into
that convolution; a scripted model → a frozen one; and a saved optimized file → the loaded model
with oneDNN's prepacked convolutions where they pay off (`load`).

The checked graph, not a trace, says where folding is exact: a layer whose `LayerDef.folds_after`
names the op right before it in the same chain (a `bn` after a `conv`) reads only that layer's
output (a tensor read twice — by a residual's identity, sibling branches, a `tap` — is never a
chain neighbour).
"""

from __future__ import annotations

from typing import Iterator

from .graph import Module, Network, chains
from .layers import REGISTRY


def conv_bn_pairs(module: Module, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(module path, first attribute, second attribute) for each layer that may be folded into the
    layer before it (`LayerDef.folds_after`: a bn after a conv) and reads only that layer's output."""
    for path, chain in chains(module, prefix):
        for first, second in zip(chain, chain[1:]):
            if (first.walk_kind == second.walk_kind == "layer" and first.op in REGISTRY[second.op].folds_after
                    and not (first.shared or second.shared)):
                yield path, first.name, second.name


def fold_batchnorm(model, network: Network) -> int:
    """Puts `model` (built from `network`) in eval mode and folds each conv → bn pair: the
    convolution takes the normalization's scale and shift (exact in eval mode, where BatchNorm is
    an affine map of running statistics), the bn becomes `nn.Identity`. Returns how many."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    count = 0
    for path, conv_name, bn_name in conv_bn_pairs(network.root):
        owner = model.get_submodule(path)
        fused = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name))
        setattr(owner, conv_name, fused)
        setattr(owner, bn_name, nn.Identity())
        count += 1
    return count


def freeze(scripted):
    """A scripted eval-mode model with its weights and attributes inlined as constants
    (`torch.jit.freeze`), which lets TorchScript fold away the identities and fuse ops."""
    import torch

    return torch.jit.freeze(scripted.eval())


# NOTE: [Channels-last]
# `--optimize` saves TorchScript with channels-last (NHWC) weights. On CPU, oneDNN then runs
# the convolutions in NHWC without reordering every activation; the callers' ordinary NCHW
# input is converted once by the first convolution. Measured on a 2-core Xeon, frozen graphs,
# batch 1 / 8, time relative to the NCHW frozen graph: resnet50 0.89 / 0.74, mobilenet_v2
# 0.51 / 0.47, efficientnet_b0 0.81 / 0.49.


# NOTE: [oneDNN at load]
# What `torch.jit.optimize_for_inference` does on CPU that matters (its graph for torchvision's
# resnet50: 53 `prim::mkldnn_convolution`, 106 `prim::ConstantMKLDNNTensor`, 2 `aten::to_dense`):
# every frozen convolution becomes oneDNN's own op with its weights prepacked once into oneDNN's
# blocked layout, and the activations stay in that layout from the first convolution to the
# classifier (relu, relu6, residual adds and max pools run on the blocked tensors). No
# conv-add-relu fusion appears: the adds and relus are separate ops on oneDNN tensors. The
# prepacked constants are oneDNN tensors, which `torch.jit.save` cannot write, so the result of
# the pass cannot be saved, but the pass itself takes 0.05-0.2 s on a loaded frozen graph.
# So `--optimize` saves the frozen channels-last graph (fast with a plain `torch.jit.load`) and
# records in the archive (`ONEDNN_FILE`) whether the pass pays off; `load` re-runs it then.
# It pays off where the blocked layout spans the network. Where an op oneDNN's pass lacks sits in
# every block (EfficientNet's SiLU and squeeze-excitation: 74 layout conversions for 81
# convolutions) each conversion reorders an activation and the pass is slower than channels-last
# alone (efficientnet_b0, batch 8: 0.92x of torchvision eager against 0.60x); so the pass is
# recorded as worth it when the converted graph has, besides the two conversions at the classifier
# that every network here has, at most one per `CONVERSIONS_PER` oneDNN convolutions (resnet50,
# mobilenet_v2 and vgg16: 2 for 53, 52 and 13 convolutions; vgg16, batch 8: 0.77x with the pass
# against 0.79x without).
ONEDNN_FILE = "netdsl/onednn_at_load"  # extra file in an --optimize TorchScript archive: "1" or "0"
CONVERSIONS_PER = 8


def onednn_pays_off(frozen) -> bool:
    """Whether `torch.jit.optimize_for_inference` keeps the frozen CPU float32 graph `frozen` in
    oneDNN's layout (NOTE: [oneDNN at load]); runs the pass on a copy, as `load` will."""
    import io

    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    buffer = io.BytesIO()
    torch.jit.save(frozen, buffer)
    buffer.seek(0)
    graph = torch.jit.optimize_for_inference(torch.jit.load(buffer)).graph
    convolutions = len(graph.findAllNodes("prim::mkldnn_convolution"))
    conversions = len(graph.findAllNodes("aten::to_dense"))
    return convolutions > 0 and (conversions - 2) * CONVERSIONS_PER <= convolutions


def load(path, map_location=None):
    """A TorchScript file `netdsl compile` wrote, in eval mode, ready for inference: an
    `--optimize` file whose compile found oneDNN's layout worth it (NOTE: [oneDNN at load]) gets
    `torch.jit.optimize_for_inference` on the CPU, the other files are what `torch.jit.load` gives.
    Equivalent by hand: `torch.jit.optimize_for_inference(torch.jit.load(path))`."""
    import torch

    extra = {ONEDNN_FILE: ""}
    module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    module.eval()
    on_cpu = map_location is None or str(map_location).startswith("cpu")  # only CPU files say "1"
    if extra[ONEDNN_FILE] in ("1", b"1") and on_cpu:
        module = torch.jit.optimize_for_inference(module)
    return module
