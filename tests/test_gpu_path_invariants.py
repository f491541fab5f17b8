"""The GPU path's invariant, checked on the CPU (issue 23: found by reading, no GPU here;
bench/gpu_check.py runs it on a real one): the tied adaptive input keeps the softmax
weights' dtype under bf16 autocast. CUDA's index_copy refuses a bf16 source for an fp32
destination (CPU autocast promotes it, so CPU training never met the crash); a function
mode applies CUDA's rule here. (Generation runs on numpy, on the CPU, whatever device
the model is on: lstmlm.generate.)
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel

TIED_ADAPTIVE = ModelConfig(emb=16, hidden=24, layers=2, cutoffs=[5, 12], div_value=2.0)


class CudaIndexCopyRule(TorchFunctionMode):
    """Refuses index_copy with a source of another dtype, as CUDA does under autocast."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.index_copy, torch.Tensor.index_copy_, torch.index_copy):
            destination, source = args[0], args[3] if len(args) > 3 else kwargs["source"]
            if destination.dtype != source.dtype:
                raise RuntimeError(f"index_copy_(): self ({destination.dtype}) and source "
                                   f"({source.dtype}) expected to have the same dtype")
        return func(*args, **kwargs)


def test_adaptive_input_keeps_its_dtype_under_bf16_autocast():
    torch.manual_seed(0)
    model = LSTMLanguageModel(TIED_ADAPTIVE, 30)
    ids = torch.arange(30).view(6, 5)  # every band: head, both tail clusters
    expected = model.embed(ids)
    with CudaIndexCopyRule(), torch.autocast("cpu", dtype=torch.bfloat16):
        embedded = model.embed(ids)
        loss = model.loss(model(ids).features, ids)  # a training step's forward, as on CUDA
    assert embedded.dtype == torch.float32
    assert torch.allclose(embedded, expected, rtol=2e-2, atol=2e-2)  # bf16 products
    assert torch.equal(embedded[ids < 5], expected[ids < 5])  # head rows: the weights as they are
    loss.backward()
    assert model.decoder.tail[1][1].weight.grad is not None
