"""lstmlm: LSTM word-level language models on WikiText-2.

The package is plain PyTorch with no DVC inside; the pipeline's stages (stages/) are thin
wrappers around it. Importing it does no work and does not import torch: the data stages
stay fast, and torch is loaded only by the modules that need it.

From Python, as in the seed notebook:

    import lstmlm
    generator = lstmlm.load("data/model.pt")
    generation = generator.generate("The Beatles are", words=50, temperature=0.8, seed=0)
    print(generation.text, generation.unknown_words)
    for token in generator.stream("I like", top_k=40): ...

The settings are those of ``python -m lstmlm generate`` (lstmlm.options.SamplingOptions).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(checkpoint, vocab=None, map_location="cpu"):
    """A Generator (lstmlm.generate.Generator) for a trained checkpoint; ``vocab``: a
    vocabulary JSON to use instead of the one the checkpoint carries (it must match)."""
    from .generate import Generator  # here, not above: importing lstmlm stays free of torch

    return Generator.load(checkpoint, vocab, map_location)
