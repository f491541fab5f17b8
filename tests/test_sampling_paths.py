"""The adaptive path (lstmlm.generate.sampling.AdaptiveSampler, numpy) draws exactly what the
reference path (sample_from_log_probs on the full distribution) draws, at any temperature
and top-p: chi-square tests against the exact tempered, filtered distribution (computed
by the torch model, in float64), on a small vocabulary and on one of WikiText-2's size
and clusters; and it does so without computing what it does not need."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from test_generate import (
    DRAWS,
    adaptive_model,
    draw_counts,
    fits,
    numpy_output,
    reference_nucleus,
    word_vocab,
)
from torch import nn

from lstmlm.generate import sampling
from lstmlm.generate.engine import AdaptiveOutput
from lstmlm.generate.generator import Generator
from lstmlm.generate.options import SamplingOptions
from lstmlm.generate.sampling import AdaptiveDistribution, AdaptiveSampler, sample_from_log_probs

torch.set_num_threads(1)

WIKITEXT_SIZE, WIKITEXT_CUTOFFS = 33_278, [2000, 10000]


def realistic_decoder(seed: int = 0) -> tuple[nn.AdaptiveLogSoftmaxWithLoss, torch.Tensor]:
    """An output layer of the default model's vocabulary and clusters (33,278 words,
    cutoffs [2000, 10000], div value 4; D 64 rather than 256, for speed) with features h
    under which the clusters hold about 0.25 and 0.15 of the mass and the words'
    log-probabilities spread as a trained model's do (a few words likely, a long tail)."""
    torch.manual_seed(seed)
    decoder = nn.AdaptiveLogSoftmaxWithLoss(64, WIKITEXT_SIZE, WIKITEXT_CUTOFFS,
                                            div_value=4.0).eval()
    with torch.no_grad():
        for param in decoder.parameters():
            param.normal_(0, 0.5)
        h = torch.randn(1, 64)
        head = nn.Linear(64, 2002)
        head.weight.normal_(0, 0.5)
        head.weight[2000:] = 0
        head.bias.zero_()
        words = torch.logsumexp(head(h)[0, :2000], 0)
        head.bias[2000] = words + math.log(0.25 / 0.6)
        head.bias[2001] = words + math.log(0.15 / 0.6)
        decoder.head = head
    return decoder, h


def exact(log_probs: torch.Tensor, temperature: float, top_p: float,
          banned: list[int]) -> torch.Tensor:
    """The distribution the reference path draws from, computed in float64: banned words
    removed, tempered, then the top-p nucleus (ties at the border kept) renormalised."""
    logits = log_probs.double().clone()
    logits[banned] = -math.inf
    probs = (logits / temperature).softmax(-1)
    if top_p < 1.0:
        kept = torch.zeros_like(probs, dtype=torch.bool)
        kept[list(reference_nucleus(probs, top_p))] = True
        border = probs[kept].min()
        probs = probs.masked_fill(probs < border, 0.0)
    return probs / probs.sum()


def binned(counts: torch.Tensor, probs: torch.Tensor, bins: int = 64) -> tuple[bool, str]:
    """fits() on words grouped, in order of probability, into bins of about equal expected
    mass: with 33k words most are too rare to test one by one, but a wrong shape of the
    tail (a wrong temperature inside a cluster, say) moves mass between these bins."""
    order = torch.sort(probs.double(), descending=True).indices
    edges = (probs.double()[order].cumsum(0) / probs.double().sum() * bins).floor().clamp(
        max=bins - 1).long()
    grouped_counts = torch.zeros(bins, dtype=torch.float64).index_add_(0, edges, counts[order])
    grouped_probs = torch.zeros(bins, dtype=torch.float64).index_add_(
        0, edges, probs.double()[order])
    return fits(grouped_counts, grouped_probs)


def cluster_totals(values: torch.Tensor) -> torch.Tensor:
    bounds = [0, *WIKITEXT_CUTOFFS, WIKITEXT_SIZE]
    return torch.stack([values[a:b].sum() for a, b in zip(bounds, bounds[1:])])


# ---------------------------------------------------------------------- small vocabulary


@pytest.mark.parametrize("temperature, top_p", [(0.8, 0.95), (0.5, 0.99), (1.0, 0.8),
                                                (1.5, 1.0), (0.8, 1.0), (2.5, 0.7)])
def test_adaptive_path_draws_the_tempered_filtered_distribution(temperature, top_p):
    model, h = adaptive_model()
    with torch.no_grad():
        log_probs = model.log_probs(h)[0]
    banned = [3, 30 + int(log_probs[30:].argsort()[-2])]  # a head word, a likely tail word
    expected = exact(log_probs, temperature, top_p, banned)
    sampler = AdaptiveSampler(numpy_output(model.decoder), temperature, top_p, banned)
    features = h[0].numpy()
    counts = draw_counts(lambda rng: sampler(features, rng), DRAWS, 60)
    ok, stats = fits(counts, expected)
    assert ok, stats
    if temperature != 1.0:  # and the model's own distribution is told apart
        assert not fits(counts, exact(log_probs, 1.0, top_p, banned))[0]
    if (temperature, top_p) == (0.8, 0.95):  # the reference path draws the same
        reference = draw_counts(lambda rng: sample_from_log_probs(
            log_probs.numpy(), rng, temperature=temperature, top_p=top_p, banned=banned),
            DRAWS, 60)
        assert fits(reference, expected)[0]


# ---------------------------------------------------------------------- WikiText-2's size


@pytest.fixture(scope="module")
def wikitext_sized() -> tuple[AdaptiveOutput, np.ndarray, torch.Tensor]:
    """The realistic decoder in numpy, its features h (D,), and the torch decoder's
    log-probabilities."""
    decoder, h = realistic_decoder()
    with torch.no_grad():
        log_probs = decoder.log_prob(h)[0]
    return numpy_output(decoder), h[0].numpy(), log_probs


@pytest.mark.parametrize("temperature, top_p", [(0.8, 0.95), (1.3, 0.9)])
def test_adaptive_path_on_a_wikitext_sized_vocabulary(wikitext_sized, temperature, top_p):
    output, h, log_probs = wikitext_sized
    banned = [1, 2000 + int(log_probs[2000:10000].argmax())]
    expected = exact(log_probs, temperature, top_p, banned)
    masses = cluster_totals(expected)
    assert masses[1] > 0.05 and masses[2] > 0.02, masses  # the tails are really drawn from
    sampler = AdaptiveSampler(output, temperature, top_p, banned)
    counts = draw_counts(lambda rng: sampler(h, rng), DRAWS // 2, WIKITEXT_SIZE)
    ok, stats = fits(counts, expected, max_tv=1.0)  # word by word: the chi-square
    assert ok, f"words: {stats}"
    ok, stats = binned(counts, expected)
    assert ok, f"binned: {stats}"
    ok, stats = fits(cluster_totals(counts), masses)
    assert ok, f"clusters: {stats}"


def test_the_wikitext_sized_check_catches_a_sampler_that_trusts_the_bounds(wikitext_sized,
                                                                            monkeypatch):
    """Keeping every cluster drawn by its bound (no rejection) overstates the tails at
    temperature 0.8; a tail tempered at 1 instead of 0.8 has the wrong shape. Both fail."""
    output, h, log_probs = wikitext_sized
    expected = exact(log_probs, 0.8, 0.95, [])
    compute = AdaptiveDistribution.compute

    def no_rejection(self, k):
        compute(self, k)
        return math.inf  # "the mass is at least the bound": every draw kept
    monkeypatch.setattr(AdaptiveDistribution, "compute", no_rejection)
    sampler = AdaptiveSampler(output, 0.8, 0.95)
    counts = draw_counts(lambda rng: sampler(h, rng), 5000, WIKITEXT_SIZE)
    assert not fits(cluster_totals(counts), cluster_totals(expected))[0]
    monkeypatch.setattr(AdaptiveDistribution, "compute", compute)

    def tail_at_temperature_1(self, k):
        inverse_t, self.sampler.inverse_t = self.sampler.inverse_t, 1.0
        try:
            return compute(self, k)
        finally:
            self.sampler.inverse_t = inverse_t
    monkeypatch.setattr(AdaptiveDistribution, "compute", tail_at_temperature_1)
    counts = draw_counts(lambda rng: sampler(h, rng), 5000, WIKITEXT_SIZE)
    assert not (binned(counts, expected)[0] and fits(cluster_totals(counts),
                                                     cluster_totals(expected))[0])


def test_most_words_need_no_tail_cluster_and_none_the_sort(wikitext_sized, monkeypatch):
    """What makes the path fast: the head's bounds decide most draws. At the sample
    defaults a tail cluster is computed for a minority of words, and the vocabulary is
    never sorted at top-p 0.95."""
    output, h, _ = wikitext_sized
    computed = []
    compute = AdaptiveDistribution.compute
    monkeypatch.setattr(AdaptiveDistribution, "compute",
                        lambda self, k: computed.append(k) or compute(self, k))

    def no_sort(*args, **kwargs):
        raise AssertionError("sorted the vocabulary")
    monkeypatch.setattr(sampling, "draw_sorted_nucleus", no_sort)
    sampler = AdaptiveSampler(output, 0.8, 0.95, [1])
    rng = random.Random(0)
    for _ in range(1000):
        sampler(h, rng)
    assert 0 < len(computed) < 0.8 * 1000 * output.n_clusters, len(computed)


def test_tiny_top_p_falls_back_to_the_sort_and_gives_the_best_word(wikitext_sized):
    output, h, log_probs = wikitext_sized
    rng = random.Random(0)
    best = int(log_probs.argmax())
    assert {AdaptiveSampler(output, 0.8, 1e-9)(h, rng) for _ in range(20)} == {best}


# ---------------------------------------------------------------------- in the generator


def test_the_generator_draws_the_defaults_without_the_full_distribution(tiny_checkpoint,
                                                                       monkeypatch):
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)

    def forbidden(*args, **kwargs):
        raise AssertionError("the full distribution was computed")
    monkeypatch.setattr(AdaptiveOutput, "log_probs", forbidden)
    for options in (SamplingOptions(words=30), SamplingOptions(words=30, temperature=1.7,
                                                               top_p=0.5, allow_unk=True)):
        assert len(generator.generate("the cat", options).tokens) == 30


def test_seeds_reproduce_on_the_adaptive_path(tiny_checkpoint):
    _, model, vocab = tiny_checkpoint
    generator = Generator(model, vocab)
    for options in (SamplingOptions(words=40, seed=5),
                    SamplingOptions(words=40, seed=5, temperature=1.4, top_p=0.7)):
        first = generator.generate("the cat", options).tokens
        torch.manual_seed(99)  # the global RNGs play no part
        random.seed(99)
        np.random.seed(99)
        assert generator.generate("the cat", options).tokens == first
        assert list(generator.stream("the cat", options)) == first
    assert (generator.generate("the cat", words=40, seed=1).tokens
            != generator.generate("the cat", words=40, seed=2).tokens)


@pytest.mark.parametrize("unk_first", [True, False])
def test_unk_banned_on_the_adaptive_path_at_any_temperature(unk_first):
    from test_generate import UNK, unk_loving_model

    vocab = word_vocab(44, unk_first)
    generator = Generator(unk_loving_model("adaptive", vocab), vocab)
    for temperature, top_p in ((0.5, 0.95), (2.0, 1.0), (1.0, 0.3)):
        options = SamplingOptions(words=60, seed=0, temperature=temperature, top_p=top_p)
        assert UNK not in generator.generate("w1 w2", options).tokens, options


def test_laid_out_weights_follow_changes_to_the_model(tiny_checkpoint):
    """A Generator lays the weights out once for its streams; a change to the model (an
    optimiser step, load_state_dict) is seen by the next stream."""
    from lstmlm.model.lstm import LSTMLanguageModel

    _, model, vocab = tiny_checkpoint
    copy = LSTMLanguageModel(model.config, len(vocab)).eval()
    copy.load_state_dict(model.state_dict())
    generator = Generator(copy, vocab)
    options = SamplingOptions(words=30, seed=3, temperature=1.2, top_p=0.9)
    before = generator.generate("the cat", options).tokens
    with torch.no_grad():
        copy.lstms[0].weight_hh_l0.mul_(-2.0)
        copy.decoder.head.weight.mul_(3.0)
    after = generator.generate("the cat", options).tokens
    assert after == Generator(copy, vocab).generate("the cat", options).tokens != before
