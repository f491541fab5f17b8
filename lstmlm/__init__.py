"""lstmlm: LSTM word-level language models on WikiText-2.

The package is plain PyTorch with no DVC inside; the pipeline's stages (stages/) are thin
wrappers around it. Importing it does no work and does not import torch: the data stages
stay fast, and torch is loaded only by the modules that need it.
"""

__version__ = "0.1.0"
