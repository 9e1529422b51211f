"""The torch side of netdsl-example-ops: imported when a model is built or its source is run."""

import torch
from torch import Tensor, nn


class LearnedScale(nn.Module):
    """x * weight, with one learned factor per channel (state_dict key: `weight`, shape [C, 1, 1])."""

    def __init__(self, channels: int, init: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight
