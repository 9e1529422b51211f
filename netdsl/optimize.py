"""Inference optimizations (`netdsl compile --optimize`): a built model and its checked graph →
the same model in eval mode with every BatchNorm that directly follows a convolution folded into
that convolution; and a scripted model → a frozen one.

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
# `torch.jit.optimize_for_inference` is as fast here but its prepacked oneDNN weights do not
# survive `torch.jit.save`/`load`, so a saved file cannot use it.
