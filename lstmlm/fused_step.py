"""One time step of the model's LSTMs for a single stream, as generation runs it.

``nn.LSTM`` on CPU goes through oneDNN, whose per-call setup costs several times the
arithmetic of one step for one stream. :class:`FusedStep` computes the same step as two
matrix-vector products per layer plus the gate nonlinearities, in buffers allocated once,
on the model's device. A step reads every weight it uses from memory (the caches hold a
few MB, the default model's W_hh alone is 4 MB), so what it reads sets its time: the
first layer's input product of a frequent word is one precomputed row
(:class:`StepWeights`), read instead of all of W_ih.
"""

from __future__ import annotations

import bisect
from typing import Callable

import torch
from torch import nn

from .model import LSTMLanguageModel, State


def input_embedder(model: LSTMLanguageModel) -> Callable[[int], torch.Tensor]:
    """token id -> its input vector (emb,), as model.embed computes it, on the model's
    device. For the adaptive input it reads the one band the id falls in, instead of
    model.embed's pass over every band (which builds index tensors for a batch)."""
    if model.encoder is not None:
        table = model.encoder.weight
        return lambda token_id: table[token_id]
    softmax = model.decoder
    head = softmax.head.weight
    bounds = [0, *softmax.cutoffs]  # band b: ids [bounds[b], bounds[b + 1]); ends with V

    def embed(token_id: int) -> torch.Tensor:
        if token_id < bounds[1]:
            return head[token_id]
        band = bisect.bisect_right(bounds, token_id) - 1
        project, words = softmax.tail[band - 1]  # D -> narrow, narrow -> the band's words
        return words.weight[token_id - bounds[band]] @ project.weight  # (narrow,) @ (narrow, D)
    return embed


def first_embeddings(model: LSTMLanguageModel, rows: int) -> torch.Tensor:
    """The input vectors (n, emb) of the first ids, n at most ``rows``: rows of the
    embedding table, or with the adaptive input rows of the head's weight (the head's
    words are ids [0, cutoffs[0]), their vectors its rows, as model.embed reads them)."""
    if model.encoder is not None:
        return model.encoder.weight[:rows]
    return model.decoder.head.weight[:min(rows, model.decoder.shortlist_size)]


# Ids below this (the most frequent words; for an adaptive softmax, its head) have the
# first layer's input product precomputed: one row per id of embedding @ W_ih^T + bias.
INPUT_TABLE_ROWS = 2000


class StepWeights:
    """The model's LSTM weights laid out for single steps, built once and shared by every
    stream that starts while the weights stay as they are (Generator checks).

        layers[l]  (ih_t (in, 4H), hh_t (H, 4H), bias (1, 4H)): W_ih^T, W_hh^T and
                   b_ih + b_hh with the gate columns reordered to i, f, o, g (PyTorch
                   keeps i, f, g, o), so that one sigmoid covers the three sigmoid gates
        projection_t  (H, emb): the projection's weight transposed (None without one)
        table      (rows, 4H): the first layer's embedding @ W_ih^T + bias for the first
                   INPUT_TABLE_ROWS ids (at most the adaptive head's), read instead of
                   W_ih for the most frequent words
    """

    def __init__(self, model: LSTMLanguageModel):
        self.layers = [self._ordered(lstm) for lstm in model.lstms]
        self.projection_t = (None if model.projection is None
                             else model.projection.weight.t().contiguous())  # (H, emb)
        ih_t, _, bias = self.layers[0]
        self.table = torch.addmm(bias, first_embeddings(model, INPUT_TABLE_ROWS), ih_t)

    @staticmethod
    def _ordered(lstm: nn.LSTM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = lstm.hidden_size
        order = torch.cat([torch.arange(k * hidden, (k + 1) * hidden,
                                        device=lstm.weight_hh_l0.device) for k in (0, 1, 3, 2)])
        return (lstm.weight_ih_l0[order].t().contiguous(),
                lstm.weight_hh_l0[order].t().contiguous(),
                (lstm.bias_ih_l0 + lstm.bias_hh_l0)[order].unsqueeze(0))


class _Layer:
    """One LSTM layer's weights (as StepWeights lays them out) and its buffers:

        h, c (1, H)     the state, updated in place
        gates (1, 4H)   the products' output; sigmoids (1, 3H) and g (1, H) view it
    """

    def __init__(self, weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 h: torch.Tensor, c: torch.Tensor):
        self.ih_t, self.hh_t, self.bias = weights
        hidden = self.hh_t.size(0)
        self.h, self.c = h.reshape(1, -1).clone(), c.reshape(1, -1).clone()
        self.gates = self.h.new_empty(1, 4 * hidden)
        self.sigmoids, self.g = self.gates[:, :3 * hidden], self.gates[:, 3 * hidden:]
        self.i, self.f, self.o = self.sigmoids.chunk(3, 1)
        self.tanh_c = torch.empty_like(self.c)

    def update(self) -> None:
        """The new (h, c) from the gates' pre-activations."""
        self.sigmoids.sigmoid_()
        self.g.tanh_()
        self.c.mul_(self.f).addcmul_(self.i, self.g)
        torch.tanh(self.c, out=self.tanh_c)
        torch.mul(self.o, self.tanh_c, out=self.h)


class FusedStep:
    """One time step of the model's LSTMs for a single stream, from a given state (see
    the module docstring); ``weights`` as laid out by StepWeights, built here if not
    given. Eval mode only: no dropout."""

    def __init__(self, model: LSTMLanguageModel, state: State,
                 weights: StepWeights | None = None):
        weights = weights or StepWeights(model)
        self.embed = input_embedder(model)
        self.projection_t = weights.projection_t
        self.table = weights.table
        self.layers = [_Layer(w, h, c) for w, (h, c) in zip(weights.layers, state)]

    def __call__(self, token_id: int) -> torch.Tensor:
        """Feed one token; return the features (1, D) for predicting the next one."""
        first = self.layers[0]
        if token_id < self.table.size(0):
            torch.addmm(self.table[token_id:token_id + 1], first.h, first.hh_t, out=first.gates)
        else:
            torch.addmm(first.bias, self.embed(token_id).unsqueeze(0), first.ih_t,
                        out=first.gates)
            first.gates.addmm_(first.h, first.hh_t)
        first.update()
        below = first
        for layer in self.layers[1:]:
            torch.addmm(layer.bias, below.h, layer.ih_t, out=layer.gates)
            layer.gates.addmm_(layer.h, layer.hh_t)
            layer.update()
            below = layer
        if self.projection_t is not None:
            return below.h @ self.projection_t
        return below.h.clone()  # h is a buffer the next step overwrites
