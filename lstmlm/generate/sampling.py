"""Drawing the next word from a distribution and a stream's ``random.Random``, on numpy
float32 arrays.

Two paths draw from the same distribution (the model's, tempered, top-k and top-p
filtered, banned words removed), each reproducible with a seed:

* the reference path, :func:`sample_from_log_probs`: the full distribution over the
  vocabulary, tempered and filtered, then one draw (:func:`draw`, an inverse CDF with
  one uniform number from the stream's own RNG);
* the adaptive path, :class:`AdaptiveSampler` and :class:`AdaptiveGreedy`: with an
  adaptive softmax (and no top-k), the head's distribution first, and a tail cluster
  only when a draw lands in it or a top-p decision cannot be made without it. Each draw
  follows the full distribution exactly, without computing it.

No global RNG is used: a seed reproduces a stream whatever else the program draws.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np

from lstmlm.core.errors import LstmlmError
from lstmlm.generate.engine import AdaptiveOutput, logsumexp

# Top-p draws from the whole distribution until one lands in the nucleus; after this many
# misses (only likely with a tiny top_p) it sorts the vocabulary instead.
NUCLEUS_TRIES = 8

# draw() sums more than DIRECT_DRAW weights in blocks of DRAW_BLOCK first; up to a few
# thousand (the head's 2,002), one cumulative sum is as quick, in fewer numpy calls.
DRAW_BLOCK, DIRECT_DRAW = 256, 2048

NOTHING_TO_DRAW = ("no word is left to draw from: every word is banned or filtered, or the "
                   "model's weights are not finite")


# ---------------------------------------------------------------------- one vector


def draw(probs: np.ndarray, rng: random.Random) -> int:
    """Index drawn from non-negative weights (V,) (they need not sum to 1).

    Inverse CDF with one uniform from ``rng``, in float64 so that rare words are not
    rounded away; with side="right" a zero-weight word can never be chosen. Over more
    than DIRECT_DRAW weights (a tail cluster of 23k words), in two levels: the CDF of
    blocks of DRAW_BLOCK weights, then within the block drawn. numpy's cumsum runs one
    element at a time: 74 us over 23k weights, against 13 us for the block sums.
    """
    if probs.size <= DIRECT_DRAW:
        cdf = np.cumsum(probs, dtype=np.float64)
        return _search(cdf, probs, rng.random() * _total(cdf))
    sums = np.add.reduceat(probs, np.arange(0, probs.size, DRAW_BLOCK), dtype=np.float64)
    cdf = np.cumsum(sums)
    target = rng.random() * _total(cdf)
    block = _search(cdf, sums, target)
    start = block * DRAW_BLOCK
    within = probs[start:start + DRAW_BLOCK]
    below = float(cdf[block - 1]) if block else 0.0
    return start + _search(np.cumsum(within, dtype=np.float64) + below, within, target)


def _total(cdf: np.ndarray) -> float:
    total = float(cdf[-1])
    if not total > 0:
        raise LstmlmError(NOTHING_TO_DRAW)
    return total


def _search(cdf: np.ndarray, weights: np.ndarray, target: float) -> int:
    """The first index whose cumulative weight exceeds ``target``; the last one with
    weight if none does (``target`` rounded up to the very end)."""
    index = int(np.searchsorted(cdf, target, side="right"))
    if index >= cdf.size:
        index = int(np.flatnonzero(weights > 0)[-1])
    return index


def argmax(scores: np.ndarray) -> int:
    """The best index (lowest on ties); refuses scores with nothing finite to pick (all
    banned) or NaN (a model whose weights are not finite)."""
    best = int(scores.argmax())
    if not float(scores[best]) > -math.inf:
        raise LstmlmError(NOTHING_TO_DRAW)
    return best


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities (V,) from scores; refuses scores with nothing finite (all banned or
    filtered) or NaN."""
    top = logits.max()
    if not top > -math.inf:
        raise LstmlmError(NOTHING_TO_DRAW)
    probs = np.exp(logits - top)
    return probs / probs.sum()


def in_nucleus(probs: np.ndarray, word: int, target_mass: float) -> bool:
    """Whether ``word`` is in the top-p nucleus: the smallest set of most likely words
    whose mass reaches ``target_mass`` (top_p times the total). That holds exactly when
    the words more probable than it hold less than ``target_mass`` (so ties at the
    border are all kept)."""
    return float(probs.sum(where=probs > probs[word], dtype=np.float64)) < target_mass


def draw_sorted_nucleus(probs: np.ndarray, top_p: float, rng: random.Random) -> int:
    """Top-p draw from weights (V,) by sorting them: the nucleus is every word at least as
    probable as the one where the sorted mass reaches top_p of the total."""
    ordered = np.sort(probs)[::-1]
    cumulative = np.cumsum(ordered, dtype=np.float64)
    last = int(np.searchsorted(cumulative, top_p * float(cumulative[-1])))
    border = ordered[min(last, ordered.size - 1)]
    return draw(np.where(probs < border, 0.0, probs), rng)


def draw_nucleus(probs: np.ndarray, top_p: float, rng: random.Random) -> int:
    """Top-p (nucleus) draw from weights (V,), exact and usually without a sort.

    A draw from the whole distribution, kept only when it falls in the nucleus, is a
    draw from the nucleus renormalised; the nucleus holds at least top_p of the mass, so
    at top_p 0.95 the first draw is kept at least 95% of the time. Checking membership
    costs one pass over the vocabulary; sorting 33k words costs several.
    """
    target = top_p * float(probs.sum(dtype=np.float64))
    for _ in range(NUCLEUS_TRIES):
        word = draw(probs, rng)
        if in_nucleus(probs, word, target):
            return word
    return draw_sorted_nucleus(probs, top_p, rng)


def sample_from_log_probs(log_probs: np.ndarray, rng: random.Random, *,
                          temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                          banned: Sequence[int] = ()) -> int:
    """Temperature (0: greedy), top-k (0: off) and top-p (1: off) sampling from a full
    log-distribution (V,), never drawing a banned id. The reference for every other path.

    The filters apply in that order: top-k and top-p see the tempered distribution.
    """
    logits = np.array(log_probs, dtype=np.float32)  # a copy, changed below
    if banned:
        logits[list(banned)] = -math.inf
    if temperature == 0:
        return argmax(logits)
    if temperature != 1.0:
        logits /= temperature
    if 0 < top_k < logits.size:
        kth = np.partition(logits, -top_k)[-top_k]
        logits[logits < kth] = -math.inf
    probs = softmax(logits)
    if top_p < 1.0:
        return draw_nucleus(probs, top_p, rng)
    return draw(probs, rng)


# ---------------------------------------------------------------------- the adaptive path
#
# An adaptive softmax scores the S most frequent words and one entry per tail cluster in
# its head; cluster k's words [cutoffs[k], cutoffs[k+1]) get p(word) = p_head(k) p_k(word).
# Tempered, a word weighs p(word)^(1/T), so cluster k weighs p_head(k)^(1/T) * sum_k, with
# sum_k = sum over its n words of p_k(word)^(1/T). For probabilities p_k that sum to 1,
# sum_k lies between n^(1-1/T) (all equal) and 1 (one word holds everything): bounds
# known from the head alone, exact (1) at T = 1. The sampler draws from the head with a
# cluster's upper bound and, when a cluster is drawn, computes it and keeps the draw with
# probability mass / bound (rejection sampling: exact); top-p decisions use the bounds
# too, and compute a cluster only when they cannot decide.
#
# Scores are logits: the head's, and for a tail word its cluster's head logit plus its
# log-probability within the cluster. They are the log-probabilities plus one constant (the
# head's log-normaliser), which no comparison and no tempered ratio sees.


def _split_banned(output: AdaptiveOutput, banned: Sequence[int]
                  ) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
    """Banned ids as index arrays: the head's, and each cluster's (local)."""
    banned = sorted(set(banned))
    head = [b for b in banned if b < output.shortlist]
    tails = {}
    for k, (start, end) in enumerate(zip(output.starts, output.starts[1:])):
        local = [b - start for b in banned if start <= b < end]
        if local:
            tails[k] = np.array(local)
    return (np.array(head) if head else None), tails


class AdaptiveSampler:
    """Draws words from an adaptive softmax, exactly as :func:`sample_from_log_probs`
    would from the full distribution at ``temperature`` (> 0) and ``top_p``, without
    ``banned`` ids. Built once per stream; ``sampler(h, rng)`` draws the word after
    features h (D,)."""

    def __init__(self, output: AdaptiveOutput, temperature: float = 1.0,
                 top_p: float = 1.0, banned: Sequence[int] = ()):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 here, got {temperature}")
        self.output = output
        self.top_p, self.inverse_t = top_p, 1.0 / temperature
        self.shortlist, self.starts = output.shortlist, output.starts
        self.n_clusters = output.n_clusters
        self.head_banned, self.tail_banned = _split_banned(output, banned)
        spread = [(end - start) ** (1.0 - self.inverse_t)
                  for start, end in zip(self.starts, self.starts[1:])]
        self.high = [max(1.0, s) for s in spread]  # sum_k <= this
        # sum_k >= this; a cluster with banned words may hold nothing else worth drawing.
        self.low = [0.0 if k in self.tail_banned else min(1.0, s) for k, s in enumerate(spread)]
        self.high_factors = (None if all(h == 1.0 for h in self.high)
                             else np.array(self.high, dtype=np.float32))

    def __call__(self, h: np.ndarray, rng: random.Random) -> int:
        word = AdaptiveDistribution(self, h)
        if self.top_p >= 1.0:
            return word.draw(rng)
        for _ in range(NUCLEUS_TRIES):
            drawn = word.draw(rng)
            if word.in_nucleus(drawn):
                return drawn
        return draw_sorted_nucleus(word.full_weights(), self.top_p, rng)


class AdaptiveDistribution:
    """One word's tempered distribution under an adaptive softmax, computed lazily.

    Layouts (S shortlist words, K tail clusters):
        logits     (S + K,)  the head's scores: words, then each cluster's
        weights    (S + K,)  tempered weights exp((score - best) / T): exact for words; for
                             a cluster its exact mass once computed, before that its upper
                             bound
        tails[k]   (relative scores (n_k,), offset, tempered weights (n_k,)) of cluster
                   k's words, whose scores are offset + relative score
    Banned words have weight 0 (score -inf in the head).
    """

    def __init__(self, sampler: AdaptiveSampler, h: np.ndarray):
        self.sampler, self.h = sampler, h
        logits = sampler.output.head_logits(h)
        if sampler.head_banned is not None:
            logits[sampler.head_banned] = -math.inf
        self.logits, self.best = logits, logits.max()
        self.weights = logits - self.best
        if sampler.inverse_t != 1.0:
            self.weights *= sampler.inverse_t
        np.exp(self.weights, out=self.weights)
        if sampler.high_factors is not None:
            self.weights[sampler.shortlist:] *= sampler.high_factors
        self.tails: dict[int, tuple[np.ndarray, float, np.ndarray]] = {}
        self.masses: dict[int, float] = {}
        self._bounds: list[float] | None = None  # clusters' upper bounds, as first set

    # ------------------------------------------------------------------ clusters

    def compute(self, k: int) -> float:
        """Cluster k's words, scored as AdaptiveLogSoftmaxWithLoss.log_prob sums them;
        returns its exact tempered mass, which replaces its bound in ``weights``."""
        s = self.sampler
        entry = s.shortlist + k
        logits = s.output.cluster_logits(k, self.h)
        relative = logits - logits.max()  # scores less the cluster's best one: all <= 0
        # A word's score: its cluster's entry plus its log-probability within the cluster,
        # i.e. offset + relative, with the log-normaliser folded into the offset.
        offset = float(self.logits[entry]) - float(np.log(np.exp(relative).sum()))
        weights = relative + (offset - float(self.best))
        if s.inverse_t != 1.0:
            weights *= s.inverse_t
        np.exp(weights, out=weights)
        if k in s.tail_banned:
            weights[s.tail_banned[k]] = 0.0
        mass = float(weights.sum())
        self.bounds()  # record the bound before it is replaced
        self.weights[entry] = mass
        self.tails[k], self.masses[k] = (relative, offset, weights), mass
        return mass

    def bounds(self) -> list[float]:
        """Each cluster's upper bound on its tempered mass, as set from the head."""
        if self._bounds is None:
            self._bounds = self.weights[self.sampler.shortlist:].tolist()
        return self._bounds

    def full_weights(self) -> np.ndarray:
        """Every word's tempered weight (V,), all clusters computed."""
        s = self.sampler
        for k in range(s.n_clusters):
            if k not in self.tails:
                self.compute(k)
        return np.concatenate([self.weights[:s.shortlist]]
                              + [self.tails[k][2] for k in range(s.n_clusters)])

    # ------------------------------------------------------------------ draws

    def draw(self, rng: random.Random) -> int:
        """A word drawn from the tempered distribution (top-p aside). A cluster drawn by
        its bound is kept with probability mass / bound; a rejected draw is redrawn with
        the exact mass, so each cluster is computed at most once."""
        s = self.sampler
        while True:
            choice = draw(self.weights, rng)
            if choice < s.shortlist:
                return choice
            k = choice - s.shortlist
            if k not in self.tails:
                bound = float(self.weights[choice])
                if not rng.random() * bound < self.compute(k):
                    continue
            return s.starts[k] + draw(self.tails[k][2], rng)

    def score(self, word: int) -> float:
        s = self.sampler
        if word < s.shortlist:
            return float(self.logits[word])
        k = next(k for k in range(s.n_clusters) if word < s.starts[k + 1])
        relative, offset, _ = self.tails[k]
        return offset + float(relative[word - s.starts[k]])

    def in_nucleus(self, word: int) -> bool:
        """Whether a drawn word is in the top-p nucleus, as :func:`in_nucleus` decides on
        the full distribution: whether the words more probable than it hold less than
        top_p of the mass, i.e. whether slack = above - top_p * total < 0.

        The head and the computed clusters add exact terms. A cluster not computed, of
        bound U (and lower bound L) on its mass m, adds above_k - top_p * m, where its
        mass above the word, above_k, lies between 0 and m, and is 0 when its head entry
        is no more probable than the word (none of its words can be): so between
        -top_p * U and (1 - top_p) * U if its entry is above the word, else between
        -top_p * U and -top_p * L. A cluster is computed only when these ranges leave
        the sign open (the widest first)."""
        s = self.sampler
        level = self.score(word)
        head, head_logits = self.weights[:s.shortlist], self.logits[:s.shortlist]
        slack_head = float(np.dot(head, head_logits > level)) - s.top_p * float(head.sum())
        entries = self.logits[s.shortlist:].tolist()
        while True:
            low = high = slack_head
            widest, width = None, 0.0
            for k, entry in enumerate(entries):
                if k in self.tails:
                    relative, offset, weights = self.tails[k]
                    above = (float(np.dot(weights, relative > level - offset))
                             if entry > level else 0.0)
                    low += above - s.top_p * self.masses[k]
                    high += above - s.top_p * self.masses[k]
                    continue
                bound = self.bounds()[k]
                k_high = ((1 - s.top_p) * bound if entry > level
                          else -s.top_p * bound * s.low[k] / s.high[k])
                low, high = low - s.top_p * bound, high + k_high
                if k_high + s.top_p * bound > width:
                    widest, width = k, k_high + s.top_p * bound
            if high < 0:
                return True
            if low >= 0 or widest is None:
                return False  # (widest None here only with NaN weights)
            self.compute(widest)


class AdaptiveGreedy:
    """The most likely word (lowest id on ties) of an adaptive softmax, skipping every
    tail cluster that cannot beat the best head word: a tail word's score is at most its
    cluster's head score. Built once per stream, like AdaptiveSampler."""

    def __init__(self, output: AdaptiveOutput, banned: Sequence[int] = ()):
        self.output = output
        self.shortlist, self.starts = output.shortlist, output.starts
        self.head_banned, self.tail_banned = _split_banned(output, banned)

    def __call__(self, h: np.ndarray, rng: random.Random | None = None) -> int:
        logits = self.output.head_logits(h)
        if self.head_banned is not None:
            logits[self.head_banned] = -math.inf
        best = int(logits[:self.shortlist].argmax())
        best_score = float(logits[best])
        for k, entry in enumerate(logits[self.shortlist:].tolist()):
            if not entry > best_score:
                continue
            tail = self.output.cluster_logits(k, h)
            offset = entry - float(logsumexp(tail))  # normalised over every word
            if k in self.tail_banned:
                tail[self.tail_banned[k]] = -math.inf
            within = int(tail.argmax())
            if offset + float(tail[within]) > best_score:
                best, best_score = self.starts[k] + within, offset + float(tail[within])
        if not best_score > -math.inf:  # all banned, or NaN from weights that are not finite
            raise LstmlmError(NOTHING_TO_DRAW)
        return best
