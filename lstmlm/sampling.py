"""Drawing the next word: pure functions of a distribution and a ``random.Random``.

Two paths, with the same results for the same seed whichever calls them:

* the plain path, :func:`sample_from_log_probs`: the full distribution over the vocabulary,
  tempered and filtered (top-k, top-p), then one draw (:func:`draw`, what
  ``torch.multinomial`` does for one sample, but seeded by the stream's own RNG);
* the adaptive path, :func:`sample_adaptive` and :func:`greedy_adaptive`: with an adaptive
  softmax at temperature 1 (or 0) and no filters, a word is drawn from the head and, only
  when a tail cluster is drawn, from that cluster. The full distribution is never
  computed, yet the draw follows it exactly.

No global RNG is used: a seed reproduces a stream whatever else the program draws.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LstmlmError

# Rejection rounds for banned words inside an adaptive softmax's tail clusters before
# falling back to the full distribution (see sample_adaptive).
MAX_REJECTIONS = 8
# Top-p draws from the full distribution until one lands in the nucleus; after this many
# misses (only likely with a tiny top_p) it sorts the vocabulary instead.
NUCLEUS_TRIES = 8

NOTHING_TO_DRAW = ("no word is left to draw from: every word is banned or filtered, or the "
                   "model's weights are not finite")


# ---------------------------------------------------------------------- the plain path


def draw(probs: torch.Tensor, rng: random.Random) -> int:
    """Index drawn from non-negative weights (V,) (they need not sum to 1).

    Inverse CDF with one uniform from ``rng``: far cheaper than torch.multinomial on a
    large vocabulary. The CDF is float64 so that rare words are not rounded away; with
    ``right=True`` a zero-weight word can never be chosen.
    """
    cdf = probs.double().cumsum(0)
    total = float(cdf[-1])
    if not total > 0:
        raise LstmlmError(NOTHING_TO_DRAW)
    index = int(torch.searchsorted(cdf, rng.random() * total, right=True))
    if index >= cdf.numel():  # u * total rounded up to total: take the last possible word
        index = int(torch.nonzero(probs > 0).max())
    return index


def argmax(scores: torch.Tensor) -> int:
    """The best index (lowest on ties); refuses scores with nothing finite to pick (all
    banned) or NaN (a model whose weights are not finite)."""
    best = int(scores.argmax())
    if not float(scores[best]) > -math.inf:
        raise LstmlmError(NOTHING_TO_DRAW)
    return best


def in_nucleus(probs: torch.Tensor, word: int, target_mass: float) -> bool:
    """Whether ``word`` is in the top-p nucleus: the smallest set of most likely words
    whose mass reaches ``target_mass`` (top_p times the total). That holds exactly when
    the words more probable than it hold less than ``target_mass`` (so ties at the
    border are all kept)."""
    return float(probs[probs > probs[word]].sum(dtype=torch.float64)) < target_mass


def draw_nucleus(probs: torch.Tensor, top_p: float, rng: random.Random) -> int:
    """Top-p (nucleus) draw from weights (V,), exact and usually without a sort.

    A draw from the whole distribution, kept only when it falls in the nucleus, is a
    draw from the nucleus renormalised; the nucleus holds at least top_p of the mass, so
    at top_p 0.95 the first draw is kept at least 95% of the time. Checking membership
    costs one pass over the vocabulary; sorting 33k words costs several.
    """
    target = top_p * float(probs.sum(dtype=torch.float64))
    for _ in range(NUCLEUS_TRIES):
        word = draw(probs, rng)
        if in_nucleus(probs, word, target):
            return word
    ordered = torch.sort(probs, descending=True).values
    last = int(torch.searchsorted(ordered.double().cumsum(0), target))
    border = ordered[min(last, ordered.numel() - 1)]
    return draw(probs.masked_fill(probs < border, 0.0), rng)


def sample_from_log_probs(log_probs: torch.Tensor, rng: random.Random, *,
                          temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                          banned: Sequence[int] = ()) -> int:
    """Temperature (0: greedy), top-k (0: off) and top-p (1: off) sampling from a full
    log-distribution (V,), never drawing a banned id.

    The filters apply in that order: top-k and top-p see the tempered distribution.
    """
    logits = log_probs.float()
    if banned:
        logits = logits.clone()
        logits[list(banned)] = -math.inf
    if temperature == 0:
        return argmax(logits)
    if temperature != 1.0:
        logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k, sorted=False).values.min()
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = logits.softmax(-1)
    if top_p < 1.0:
        return draw_nucleus(probs, top_p, rng)
    return draw(probs, rng)


# ---------------------------------------------------------------------- the adaptive path


def sample_adaptive(decoder: nn.AdaptiveLogSoftmaxWithLoss, h: torch.Tensor,
                    banned: Sequence[int], rng: random.Random) -> int:
    """Exact sampling from an adaptive softmax without the full distribution.

    p(word) = p_head(cluster) * p_cluster(word): draw from the head (frequent words plus
    one entry per tail cluster); if a cluster is drawn, draw only inside it. Only valid
    for the model's own distribution (temperature 1, no top-k/top-p).

    Banned words in the head are masked there, which renormalises exactly as on the full
    distribution (for them p = p_head). Banned words in a tail cannot be masked that way
    (it would renormalise within the cluster only), so a draw that lands on one is
    rejected and redrawn, which again gives exactly the distribution conditioned on not
    banned. After a few rejections (the banned words hold most of the mass) the full
    distribution is computed instead.
    """
    shortlist = decoder.shortlist_size
    head_logits = decoder.head(h)[0].float()  # (shortlist + n_clusters,)
    banned_set = set(banned)
    head_banned = [b for b in banned_set if b < shortlist]
    if head_banned:
        head_logits[head_banned] = -math.inf
    head_probs = F.softmax(head_logits, -1)
    tails: dict[int, torch.Tensor] = {}
    for _ in range(MAX_REJECTIONS):
        choice = draw(head_probs, rng)
        if choice < shortlist:
            return choice
        cluster = choice - shortlist
        if cluster not in tails:
            tails[cluster] = F.softmax(decoder.tail[cluster](h)[0].float(), -1)
        word = decoder.cutoffs[cluster] + draw(tails[cluster], rng)
        if word not in banned_set:
            return word
    probs = decoder.log_prob(h)[0].float().exp()
    probs[list(banned_set)] = 0.0
    return draw(probs, rng)


def greedy_adaptive(decoder: nn.AdaptiveLogSoftmaxWithLoss, h: torch.Tensor,
                    banned: Sequence[int]) -> int:
    """The most likely word (lowest id on ties) of an adaptive softmax, skipping every
    tail cluster that cannot beat the best head word: a tail word's log-probability is
    at most its cluster's head log-probability."""
    shortlist = decoder.shortlist_size
    head = F.log_softmax(decoder.head(h)[0].float(), -1)
    scores = head[:shortlist].clone()
    scores[[b for b in banned if b < shortlist]] = -math.inf
    best = int(scores.argmax())
    best_score = float(scores[best])
    for cluster in range(decoder.n_clusters):
        cluster_lp = float(head[shortlist + cluster])
        if not cluster_lp > best_score:
            continue
        # The same sum as AdaptiveLogSoftmaxWithLoss.log_prob, so the same argmax.
        tail = F.log_softmax(decoder.tail[cluster](h)[0].float(), -1) + head[shortlist + cluster]
        start = decoder.cutoffs[cluster]
        tail[[b - start for b in banned if start <= b < decoder.cutoffs[cluster + 1]]] = -math.inf
        within = int(tail.argmax())
        if float(tail[within]) > best_score:
            best, best_score = start + within, float(tail[within])
    if not best_score > -math.inf:  # all banned, or NaN from weights that are not finite
        raise LstmlmError(NOTHING_TO_DRAW)
    return best
