"""The running average of the weights that SWA and NT-ASGD keep (the trainer starts it)."""

from __future__ import annotations

import torch
from torch import nn


class UniformAverage(torch.optim.swa_utils.AveragedModel):
    """torch's AveragedModel (the same state_dict, the average in ``.module``), updated by
    one foreach lerp over all weights: off CUDA, torch's own update loops over them with
    temporaries, a cost the last quarter of every default run pays each step."""

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
        if self.n_averaged == 0:
            torch._foreach_copy_(mine, theirs)
        else:  # avg + (w - avg) / (n + 1): the uniform average of the n + 1 weights seen
            torch._foreach_lerp_(mine, theirs, 1.0 / (int(self.n_averaged) + 1))
        self.n_averaged += 1
