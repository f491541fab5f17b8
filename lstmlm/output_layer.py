"""The model's output layer in numpy, for one feature vector at a time, as generation
runs it: an adaptive softmax (nn.AdaptiveLogSoftmaxWithLoss) or a full one (nn.Linear
and a log-softmax), computing the same scores from the same weights.

Every product is ``h @ W^T`` with W^T stored (in, out): one matrix-vector product that
reads the matrix once, row after row. Reading the weights from memory is what a word
costs (docs/generation.md); the arithmetic is small.

Arrays are float32. Features h are (D,); each call returns new arrays, so that streams
drawn side by side (a server's worker threads) share the weights and nothing else.
"""

from __future__ import annotations

import numpy as np

from .checkpoint import Weights


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

    def __init__(self, arrays: dict[str, np.ndarray], prefix: str = "decoder."):
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

    def __init__(self, arrays: dict[str, np.ndarray], prefix: str = "decoder."):
        self.weight_t, self.bias = _transposed(arrays[f"{prefix}weight"]), arrays[f"{prefix}bias"]

    def log_probs(self, h: np.ndarray) -> np.ndarray:
        """Features h (D,) -> the log-distribution (V,)."""
        return log_softmax(h @ self.weight_t + self.bias)


def output_layer(weights: Weights) -> AdaptiveOutput | FullOutput:
    """The output layer the config calls for, laid out from the weights."""
    if weights.config.output == "adaptive":
        return AdaptiveOutput(weights.arrays)
    return FullOutput(weights.arrays)
