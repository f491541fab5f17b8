"""One time step of the model's LSTMs for a single stream, in numpy, as generation runs it.

Per word a stream needs one step of each LSTM: two matrix-vector products per layer and
the gates' nonlinearities, a dozen numpy calls in buffers allocated once (torch spent
5-10 us dispatching each of its ~25 small operations; numpy's BLAS reads the weights a
little faster too). A step reads every weight it uses from memory (the default model's
W_hh alone is 4 MB, more than a core's caches), so what it reads sets its time: the
first layer's input product of a frequent word is one precomputed row, read instead of
all of W_ih (:func:`input_gates`).

The sigmoid gates use sigmoid(x) = (1 + tanh(x / 2)) / 2, with their weights halved once
(exactly: a power of two): one tanh then covers all four gates, and nothing overflows
(exp(-x) does, for x below -88). It differs from torch's sigmoid by float32 rounding.
"""

from __future__ import annotations

import bisect
from typing import Callable, Sequence

import numpy as np

from .checkpoint import Weights

# Ids below this (the most frequent words) have the first layer's input product
# precomputed: one row per id of embedding @ W_ih^T + bias.
INPUT_TABLE_ROWS = 2000


def _gates_ordered(array: np.ndarray, hidden: int) -> np.ndarray:
    """Gate blocks (PyTorch's i, f, g, o along the first axis) as i, f, o, g, with the
    three sigmoid gates halved: a sigmoid is then one tanh (see the docstring)."""
    i, f, g, o = (array[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i * 0.5, f * 0.5, o * 0.5, g])


def input_gates(weights: Weights, vocab_size: int, ih_t: np.ndarray,
                bias: np.ndarray) -> Callable[[int], np.ndarray]:
    """token id -> the first layer's input product, its embedding @ W_ih^T + bias (4H,),
    as model.embed embeds it. A row of a table for the first INPUT_TABLE_ROWS ids (of
    the embedding table, or with the adaptive input of the head's weight: the head's
    words' vectors are its rows). A word of tail cluster k under the adaptive input is
    its row of the cluster's narrow output weight mapped back to D by the transpose of
    the cluster's projection (lstmlm.model.adaptive_input), so its product is that row
    @ (projection @ W_ih^T), a (narrow, 4H) matrix laid out once: a quarter or less of
    W_ih's reading."""
    arrays = weights.arrays
    rows = min(INPUT_TABLE_ROWS, vocab_size)
    if "encoder.weight" in arrays:
        encoder = arrays["encoder.weight"]
        table = encoder[:rows] @ ih_t + bias
        return lambda token_id: (table[token_id] if token_id < rows
                                 else encoder[token_id] @ ih_t + bias)
    head = arrays["decoder.head.weight"]
    bounds = [0, *weights.config.cutoffs, vocab_size]  # band b: ids [bounds[b], bounds[b + 1])
    table = head[:min(rows, bounds[1])] @ ih_t + bias
    bands = [(arrays[f"decoder.tail.{k}.1.weight"],  # (n_k, narrow)
              arrays[f"decoder.tail.{k}.0.weight"] @ ih_t)  # (narrow, D) @ (D, 4H)
             for k in range(len(bounds) - 2)]

    def gates(token_id: int) -> np.ndarray:
        if token_id < len(table):
            return table[token_id]
        band = bisect.bisect_right(bounds, token_id) - 1
        if band == 0:  # a head word beyond the table
            return head[token_id] @ ih_t + bias
        words, product = bands[band - 1]
        return words[token_id - bounds[band]] @ product + bias
    return gates


class StepWeights:
    """The model's LSTM weights laid out for single steps, built once and shared by every
    stream that starts while the weights stay as they are (Generator checks).

        layers[l]     (ih_t (in, 4H), hh_t (H, 4H), bias (4H,)): W_ih^T, W_hh^T and
                      b_ih + b_hh, gate columns i, f, o, g, the sigmoid gates' halved
        projection_t  (H, emb): the projection's weight transposed (None without one)
        input_gates   token id -> the first layer's input product (see input_gates)
    """

    def __init__(self, weights: Weights, vocab_size: int):
        config, arrays = weights.config, weights.arrays
        self.hidden = config.hidden
        self.layers = [self._layer(arrays, f"lstms.{i}.") for i in range(config.layers)]
        projection = arrays.get("projection.weight")
        self.projection_t = None if projection is None else np.ascontiguousarray(projection.T)
        ih_t, _, bias = self.layers[0]
        self.input_gates = input_gates(weights, vocab_size, ih_t, bias)

    def _layer(self, arrays: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, ...]:
        def ordered(name: str) -> np.ndarray:
            return _gates_ordered(arrays[prefix + name], self.hidden)
        return (np.ascontiguousarray(ordered("weight_ih_l0").T),
                np.ascontiguousarray(ordered("weight_hh_l0").T),
                ordered("bias_ih_l0") + ordered("bias_hh_l0"))


class _Layer:
    """One LSTM layer's state and buffers:

        h, c (H,)      the state, updated in place
        gates (4H,)    the pre-activations, then the activations: i, f, o (sigmoids)
                       and g (tanh) view it
    """

    def __init__(self, weights: tuple[np.ndarray, ...]):
        self.ih_t, self.hh_t, self.bias = weights
        hidden = self.hh_t.shape[0]
        self.h, self.c = np.zeros(hidden, np.float32), np.zeros(hidden, np.float32)
        self.scratch = np.empty(hidden, np.float32)
        self.gates = np.empty(4 * hidden, np.float32)
        self.sigmoids = self.gates[:3 * hidden]
        self.i, self.f, self.o, self.g = (self.gates[k * hidden:(k + 1) * hidden]
                                          for k in range(4))

    def advance(self, input_gates: np.ndarray) -> None:
        """One step: gates = input_gates + h @ W_hh^T, then the new (h, c)."""
        np.dot(self.h, self.hh_t, out=self.gates)
        np.add(self.gates, input_gates, out=self.gates)
        np.tanh(self.gates, out=self.gates)  # g's tanh; tanh(x / 2) for the sigmoids
        np.multiply(self.sigmoids, 0.5, out=self.sigmoids)
        np.add(self.sigmoids, 0.5, out=self.sigmoids)
        np.multiply(self.c, self.f, out=self.c)  # c = f * c + i * g
        np.multiply(self.i, self.g, out=self.scratch)
        np.add(self.c, self.scratch, out=self.c)
        np.tanh(self.c, out=self.scratch)  # h = o * tanh(c)
        np.multiply(self.o, self.scratch, out=self.h)


class FusedStep:
    """The LSTMs of one stream, from the zero state: ``prime(ids)`` feeds a prompt,
    ``step(id)`` one more id; both return the features (D,) that predict the next id.
    Eval mode only: no dropout."""

    def __init__(self, weights: StepWeights):
        self.weights = weights
        self.layers = [_Layer(w) for w in weights.layers]

    def prime(self, ids: Sequence[int]) -> np.ndarray:
        """Feed the prompt's ids, one step each; the features (D,) after the last."""
        for token_id in ids:
            self._feed(self.weights.input_gates(token_id))
        return self._features()

    def __call__(self, token_id: int) -> np.ndarray:
        """Feed one id; the features (D,) for predicting the next one."""
        return self.prime((token_id,))

    def _feed(self, first_input: np.ndarray) -> None:
        below = None
        for layer in self.layers:
            layer.advance(first_input if below is None else below.h @ layer.ih_t + layer.bias)
            below = layer

    def _features(self) -> np.ndarray:
        top, projection_t = self.layers[-1].h, self.weights.projection_t
        return top @ projection_t if projection_t is not None else top.copy()
