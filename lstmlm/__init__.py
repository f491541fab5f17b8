"""lstmlm: LSTM word-level language models on WikiText-2 (or your own text).

The library has no DVC inside; the pipeline's stages (stages/) are thin wrappers around
it. Its rooms follow the pipeline (docs/architecture.md):

    core/      errors, params checking, safe files, checkpoints, the machine
    data/      the corpus: download, tokenise, vocabulary, tensorise, batches
    model/     the LSTM language model and its config
    train/     the training loop, schedule, resume, data parallelism
    evaluate/  perplexity, the neural cache and dynamic evaluation
    generate/  text from a prompt, in numpy (no torch), and ``python -m lstmlm generate``
    serve/     a local web page, ``python -m lstmlm serve``

Importing it does no work and does not import torch. From Python:

    import lstmlm
    generator = lstmlm.load("data/model.pt")
    generation = generator.generate("The Beatles are", words=50, temperature=0.8, seed=0)
    print(generation.text, generation.unknown_words)
    for token in generator.stream("I like", top_k=40): ...

The settings are those of ``python -m lstmlm generate`` (lstmlm.generate.options).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(checkpoint, vocab=None, map_location="cpu"):
    """A Generator (lstmlm.generate.generator) for a trained checkpoint; ``vocab``: a
    vocabulary JSON to use instead of the one the checkpoint carries (it must match)."""
    from lstmlm.generate.generator import Generator

    return Generator.load(checkpoint, vocab, map_location)
