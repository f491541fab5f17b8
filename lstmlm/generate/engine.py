"""The model's forward pass in numpy, for one stream, as generation runs it: the LSTM
step and the output layer, from float32 arrays laid out once (:class:`Engine`).

It re-implements lstmlm.model.lstm in eval mode, so it says what it implements:
``IMPLEMENTED`` names every ModelConfig field with the values it runs as the torch model
does, and an Engine counts the weights it reads. A config with a field or value it does not
implement, or weights it did not read, is refused with one line (:class:`EngineError`) when
the engine is built, which ``lstmlm.load`` does; tests/test_generate.py compares it with
the torch model for every ModelConfig field.

LSTM step: per word, two matrix-vector products per layer and the gates in buffers
allocated once. Reading the weights from memory sets its time (the default model's W_hh
alone is 4 MB), so a frequent word's first input product is one precomputed row
(:func:`input_gates`). The sigmoid gates use sigmoid(x) = (1 + tanh(x / 2)) / 2, their
weights halved once (exactly): one tanh covers all four gates, and nothing overflows. It
differs from torch's sigmoid by float32 rounding.

Output layer: an adaptive softmax (nn.AdaptiveLogSoftmaxWithLoss) or a full one, the same
scores from the same weights, every product ``h @ W^T`` with W^T stored (in, out). Each
call returns new arrays, so that streams drawn side by side share the weights only.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from lstmlm.core.errors import LstmlmError, shown
from lstmlm.core.loading import Weights

# Every ModelConfig field, and the values the engine runs as lstmlm.model.lstm does in eval
# mode (ANY: every valid value). The dropouts, init and forget_gate_bias shape training
# only: eval mode drops nothing, and the weights are loaded, not initialised.
ANY = None
IMPLEMENTED: dict[str, tuple | None] = {
    "emb": ANY, "hidden": ANY, "layers": ANY,
    "tie_weights": (True, False), "output": ("adaptive", "full"),
    "cutoffs": ANY, "div_value": ANY,
    "input_dropout": ANY, "layer_dropout": ANY, "output_dropout": ANY, "word_dropout": ANY,
    "weight_dropout": ANY, "init": ANY, "forget_gate_bias": ANY,
}


class EngineError(LstmlmError):
    """A model the numpy engine does not implement: generating from it would be wrong."""


def check_implemented(config: Any) -> None:
    """Refuse a model config with a field, or a value, that IMPLEMENTED does not name."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name not in IMPLEMENTED:
            raise EngineError(f"the model sets model.{field.name}: {shown(value)}, which generation "
                              "(lstmlm/generate/engine.py) does not implement")
        allowed = IMPLEMENTED[field.name]
        if allowed is not ANY and value not in allowed:
            raise EngineError(f"the model sets model.{field.name}: {shown(value)}, which generation "
                              "(lstmlm/generate/engine.py) does not implement (it runs "
                              f"{', '.join(map(repr, allowed))})")


class _Reads(Mapping[str, np.ndarray]):
    """The weights by name, remembering which ones were read."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays, self.read = arrays, set()

    def __getitem__(self, name: str) -> np.ndarray:
        array = self.arrays[name]
        self.read.add(name)
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


class Engine:
    """A model's weights laid out for generation: ``step`` (the LSTMs) and ``output``
    (the output layer), built once and shared by every stream that starts while the
    weights stay as they are. Raises EngineError for a model it does not implement."""

    def __init__(self, weights: Weights, vocab_size: int):
        check_implemented(weights.config)
        reads = _Reads(weights.arrays)
        self.step = StepWeights(weights.config, reads, vocab_size)
        self.output = (AdaptiveOutput(reads) if weights.config.output == "adaptive"
                       else FullOutput(reads))
        unread = sorted(set(weights.arrays) - reads.read)
        if unread:
            raise EngineError(f"the model holds weights that generation "
                              f"(lstmlm/generate/engine.py) does not read: {', '.join(unread)}")


# --------------------------------------------------------------------------- LSTM step

# Ids below this (the most frequent words) have the first layer's input product
# precomputed: one row per id of embedding @ W_ih^T + bias.
INPUT_TABLE_ROWS = 2000


def _gates_ordered(array: np.ndarray, hidden: int) -> np.ndarray:
    """Gate blocks (PyTorch's i, f, g, o along the first axis) as i, f, o, g, with the
    three sigmoid gates halved: a sigmoid is then one tanh (see the docstring)."""
    i, f, g, o = (array[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i * 0.5, f * 0.5, o * 0.5, g])


def input_gates(config: Any, arrays: Mapping[str, np.ndarray], vocab_size: int,
                ih_t: np.ndarray, bias: np.ndarray) -> Callable[[int], np.ndarray]:
    """token id -> the first layer's input product, its embedding @ W_ih^T + bias (4H,),
    as model.embed embeds it. A row of a table for the first INPUT_TABLE_ROWS ids (of
    the embedding table, or with the adaptive input of the head's weight: the head's
    words' vectors are its rows). A word of tail cluster k under the adaptive input is
    its row of the cluster's narrow output weight mapped back to D by the transpose of
    the cluster's projection (lstmlm.model.lstm.adaptive_input), so its product is that row
    @ (projection @ W_ih^T), a (narrow, 4H) matrix laid out once: a quarter or less of
    W_ih's reading."""
    rows = min(INPUT_TABLE_ROWS, vocab_size)
    if "encoder.weight" in arrays:
        encoder = arrays["encoder.weight"]
        table = encoder[:rows] @ ih_t + bias
        return lambda token_id: (table[token_id] if token_id < rows
                                 else encoder[token_id] @ ih_t + bias)
    head = arrays["decoder.head.weight"]
    bounds = [0, *config.cutoffs, vocab_size]  # band b: ids [bounds[b], bounds[b + 1])
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

    def __init__(self, config: Any, arrays: Mapping[str, np.ndarray], vocab_size: int):
        self.hidden = config.hidden
        self.layers = [self._layer(arrays, f"lstms.{i}.") for i in range(config.layers)]
        projection = arrays["projection.weight"] if "projection.weight" in arrays else None
        self.projection_t = None if projection is None else np.ascontiguousarray(projection.T)
        ih_t, _, bias = self.layers[0]
        self.input_gates = input_gates(config, arrays, vocab_size, ih_t, bias)

    def _layer(self, arrays: Mapping[str, np.ndarray], prefix: str) -> tuple[np.ndarray, ...]:
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


# --------------------------------------------------------------------------- output layer


def _transposed(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.T)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax of scores (n,): scores minus their log-sum-exp (float32)."""
    return logits - logsumexp(logits)


def logsumexp(logits: np.ndarray) -> np.float32:
    """log(sum(exp(scores))), shifted by the largest score so that nothing overflows."""
    top = logits.max()
    return top + np.log(np.exp(logits - top).sum())


class AdaptiveOutput:
    """An adaptive softmax's weights (``decoder.*`` in the model's state_dict), laid out:

        head_t     (D, S + K)  the head's weight transposed: S shortlist words, then one
                               entry per tail cluster; head_bias (S + K,) or None
        tails[k]   (project_t (D, narrow_k), its bias or None, words_t (narrow_k, n_k),
                   its bias or None): cluster k's two products
        starts     [S, S + n_0, ..., V]: cluster k holds ids [starts[k], starts[k + 1])

    The model never has biases here; a layer swapped in by hand (tests do) may.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], prefix: str = "decoder."):
        self.n_clusters = sum(1 for name in arrays
                              if name.startswith(f"{prefix}tail.") and name.endswith(".1.weight"))
        head = arrays[f"{prefix}head.weight"]
        self.head_t, self.head_bias = _transposed(head), arrays.get(f"{prefix}head.bias")
        self.shortlist = head.shape[0] - self.n_clusters
        self.tails, self.starts = [], [self.shortlist]
        for k in range(self.n_clusters):
            tail = f"{prefix}tail.{k}."
            words = arrays[tail + "1.weight"]  # (n_k, narrow_k)
            self.tails.append((_transposed(arrays[tail + "0.weight"]), arrays.get(tail + "0.bias"),
                               _transposed(words), arrays.get(tail + "1.bias")))
            self.starts.append(self.starts[-1] + words.shape[0])

    def head_logits(self, h: np.ndarray) -> np.ndarray:
        """Features h (D,) -> the head's logits (S + K,)."""
        logits = h @ self.head_t
        return logits if self.head_bias is None else logits + self.head_bias

    def cluster_logits(self, k: int, h: np.ndarray) -> np.ndarray:
        """Features h (D,) -> cluster k's logits (n_k,)."""
        project_t, project_bias, words_t, words_bias = self.tails[k]
        narrow = h @ project_t
        if project_bias is not None:
            narrow += project_bias
        logits = narrow @ words_t
        return logits if words_bias is None else logits + words_bias

    def log_probs(self, h: np.ndarray) -> np.ndarray:
        """The full log-distribution (V,), as AdaptiveLogSoftmaxWithLoss.log_prob: a
        shortlist word's head log-probability; a tail word's cluster entry's plus its
        log-probability within the cluster."""
        head = log_softmax(self.head_logits(h))
        parts = [head[:self.shortlist]]
        for k in range(self.n_clusters):
            parts.append(log_softmax(self.cluster_logits(k, h)) + head[self.shortlist + k])
        return np.concatenate(parts)


class FullOutput:
    """A full softmax's weights (``decoder.weight`` (V, D) and ``decoder.bias``), laid
    out as weight_t (D, V)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], prefix: str = "decoder."):
        self.weight_t, self.bias = _transposed(arrays[f"{prefix}weight"]), arrays[f"{prefix}bias"]

    def log_probs(self, h: np.ndarray) -> np.ndarray:
        """Features h (D,) -> the log-distribution (V,)."""
        return log_softmax(h @ self.weight_t + self.bias)
