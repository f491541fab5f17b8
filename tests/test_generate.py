"""Generation: the sampling library (statistically, on tiny models), the numpy engine
against the torch model, and the CLI (`python -m lstmlm generate`, as subprocesses on a
tiny checkpoint, never importing torch)."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import ROOT, watching_torch
from lstmlm.core.checkpoint import CheckpointError, save_checkpoint
from lstmlm.core.errors import LstmlmError
from lstmlm.core.loading import Weights, load, load_weights
from lstmlm.data.vocab import EOS, UNK, Vocabulary
from lstmlm.generate.engine import AdaptiveOutput, FusedStep
from lstmlm.generate.generator import Generator
from lstmlm.generate.options import FRESH, SamplingOptions
from lstmlm.generate.sampling import (
    AdaptiveGreedy,
    AdaptiveSampler,
    draw,
    draw_nucleus,
    sample_from_log_probs,
)
from lstmlm.generate.text import detokenise
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel

torch.set_num_threads(1)

DRAWS = 20_000


# ---------------------------------------------------------------------- one draw


def sample_adaptive(output, h, banned, rng, *, temperature=1.0, top_p=1.0) -> int:
    """One word from an adaptive softmax: a sampler built for a single draw."""
    return AdaptiveSampler(output, temperature, top_p, banned)(h, rng)


def greedy_adaptive(output, h, banned) -> int:
    return AdaptiveGreedy(output, banned)(h)


def next_token(generator: Generator, h, options: SamplingOptions, rng) -> int:
    """The word a generator's stream would draw after features h (D,)."""
    banned = [] if options.allow_unk else [generator.vocab.unk_id]
    pick = generator._picker(generator.engine().output, options, banned)
    return pick(np.asarray(h, np.float32).reshape(-1), rng)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    """conftest's tiny checkpoint: (directory, model, vocab)."""
    return tiny_checkpoint


def word_vocab(n: int, unk_first: bool = False) -> Vocabulary:
    words = [f"w{i}" for i in range(n - 2)]
    words = [UNK, EOS] + words if unk_first else [EOS] + words + [UNK]
    return Vocabulary(tuple(words), tuple(range(n, 0, -1)))


def adaptive_model(seed: int = 0) -> tuple[LSTMLanguageModel, torch.Tensor]:
    """Vocabulary 60, cutoffs [10, 30], and features h under which the head words hold
    0.4 of the mass and each tail cluster 0.3, with far from uniform clusters."""
    torch.manual_seed(seed)
    model = LSTMLanguageModel(ModelConfig(emb=8, hidden=16, layers=1, tie_weights=False, cutoffs=[10, 30],
                                          div_value=2.0), 60).eval()
    with torch.no_grad():
        for param in model.decoder.parameters():
            param.normal_(0, 0.6)
        h = torch.randn(1, 16)
        head = nn.Linear(16, 12)  # with a bias, to set the clusters' mass
        head.weight.normal_(0, 0.6)
        head.weight[10:] = 0
        head.bias.zero_()
        head.bias[10:] = torch.logsumexp(head(h)[0, :10], 0) + math.log(0.75)
        model.decoder.head = head
    return model, h


def numpy_output(decoder: nn.AdaptiveLogSoftmaxWithLoss) -> AdaptiveOutput:
    """The numpy engine's copy of an adaptive softmax's weights, as they are now."""
    return AdaptiveOutput({name: tensor.detach().numpy().copy()
                           for name, tensor in decoder.state_dict().items()}, prefix="")


def draw_counts(sampler, n: int, size: int, seed: int = 1) -> torch.Tensor:
    rng = random.Random(seed)
    counts = torch.zeros(size, dtype=torch.float64)
    with torch.inference_mode():
        for _ in range(n):
            counts[sampler(rng)] += 1
    return counts


def fits(counts: torch.Tensor, probs: torch.Tensor, max_tv: float = 0.03) -> tuple[bool, str]:
    """Chi-square (p ~ 1e-6 critical value) and total variation (< max_tv) of counts
    against probs. Bins expected below 5 draws are pooled (for the chi-square only: on
    tens of thousands of rare words the total variation of honest draws is large)."""
    probs = probs.double() / probs.double().sum()
    n = float(counts.sum())
    if bool((counts[probs == 0] > 0).any()):
        return False, "drew a word of probability 0"
    expected = probs * n
    small = expected < 5
    observed = torch.cat([counts[~small], counts[small].sum().view(1)])
    expected = torch.cat([expected[~small], expected[small].sum().view(1)])
    keep = expected > 0
    chi2 = float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    df = int(keep.sum()) - 1
    z = 4.75  # Wilson-Hilferty approximation of the chi-square quantile at 1 - 1e-6
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    tv = 0.5 * float((counts / n - probs).abs().sum())
    return chi2 < critical and tv < max_tv, f"chi2 {chi2:.0f} (critical {critical:.0f}), tv {tv:.4f}"


# ---------------------------------------------------------------------- adaptive sampling


def wrong_adaptive(bug: str):
    """sample_adaptive with one deliberate bug in the tail draw, for checking the check."""
    def sampler(decoder, h, rng):
        head = F.softmax(decoder.head(h)[0], -1).numpy()
        choice = draw(head, rng)
        if choice < decoder.shortlist_size:
            return choice
        cluster = choice - decoder.shortlist_size
        start, end = decoder.cutoffs[cluster], decoder.cutoffs[cluster + 1]
        logits = decoder.tail[cluster](h)[0]
        if bug == "uniform tail":
            return start + rng.randrange(end - start)
        if bug == "tail at temperature 1.5":
            return start + draw(F.softmax(logits / 1.5, -1).numpy(), rng)
        if bug == "off by one":
            return start + (draw(F.softmax(logits, -1).numpy(), rng) + 1) % (end - start)
        raise ValueError(bug)
    return sampler


def test_adaptive_sampling_follows_the_full_distribution():
    model, h = adaptive_model()
    decoder = model.decoder
    with torch.no_grad():
        probs = model.log_probs(h)[0].exp()
    assert 0.25 < float(probs[10:30].sum()) and 0.25 < float(probs[30:].sum())  # real tail mass
    output, features = numpy_output(decoder), h[0].numpy()
    counts = draw_counts(lambda rng: sample_adaptive(output, features, [], rng), DRAWS, 60)
    ok, stats = fits(counts, probs)
    assert ok, stats
    assert counts[10:].sum() > 0.5 * DRAWS  # the tails were really drawn from


@pytest.mark.parametrize("bug", ["uniform tail", "tail at temperature 1.5", "off by one"])
def test_the_statistical_check_catches_a_wrong_tail_draw(bug):
    model, h = adaptive_model()
    with torch.no_grad():
        probs = model.log_probs(h)[0].exp()
    wrong = wrong_adaptive(bug)
    counts = draw_counts(lambda rng: wrong(model.decoder, h, rng), DRAWS, 60)
    ok, stats = fits(counts, probs)
    assert not ok, f"a sampler with bug {bug!r} passed: {stats}"


def test_adaptive_sampling_with_banned_words_in_head_and_tail():
    """Head words are masked, tail words rejected: both give the conditional distribution."""
    model, h = adaptive_model()
    with torch.no_grad():
        probs = model.log_probs(h)[0].exp()
    # A head word, and the most likely word of each tail cluster: many rejections.
    banned = [3, 10 + int(probs[10:30].argmax()), 30 + int(probs[30:].argmax())]
    probs[banned] = 0
    output, features = numpy_output(model.decoder), h[0].numpy()
    counts = draw_counts(lambda rng: sample_adaptive(output, features, banned, rng), DRAWS, 60)
    ok, stats = fits(counts, probs)
    assert ok, stats


def test_plain_sampling_never_computes_the_full_distribution(tiny, monkeypatch):
    _, model, vocab = tiny
    generator = Generator(model, vocab)

    def forbidden(*args, **kwargs):
        raise AssertionError("the full distribution was computed")
    monkeypatch.setattr(AdaptiveOutput, "log_probs", forbidden)
    for allow_unk in (True, False):  # <unk> is a tail word here: banned by rejection
        options = SamplingOptions(words=30, seed=0, allow_unk=allow_unk, temperature=1.0,
                                  top_p=1.0)
        assert len(generator.generate("the cat", options).tokens) == 30


# ---------------------------------------------------------------------- filters


def test_temperature_sampling_follows_the_tempered_distribution():
    torch.manual_seed(0)
    log_probs = torch.randn(40).mul(2).log_softmax(-1)
    counts = draw_counts(lambda rng: sample_from_log_probs(log_probs.numpy(), rng,
                                                           temperature=0.7), DRAWS, 40)
    ok, stats = fits(counts, (log_probs / 0.7).softmax(-1))
    assert ok, stats
    assert not fits(counts, log_probs.exp())[0]  # and temperature 1 is told apart


def reference_nucleus(probs: torch.Tensor, top_p: float) -> set[int]:
    """Sort-based top-p: the most likely words up to the one where the mass reaches p."""
    ordered, order = torch.sort(probs.double(), descending=True)
    cumulative = ordered.cumsum(0)
    last = int(torch.searchsorted(cumulative, top_p * float(cumulative[-1])))
    return set(order[:last + 1].tolist())


@pytest.mark.parametrize("scale, size", [(0.0, 1000), (0.3, 5000), (3.0, 5000), (8.0, 33278)])
def test_nucleus_draws_stay_in_the_sorted_nucleus(scale, size):
    torch.manual_seed(size)
    probs = (torch.randn(size) * scale).softmax(-1)
    probs[:10] = 0  # banned words
    rng = random.Random(0)
    for top_p in (1e-9, 0.1, 0.5, 0.9, 0.95, 0.999):
        nucleus = set(range(10, size)) if scale == 0.0 else reference_nucleus(probs, top_p)
        draws = {draw_nucleus(probs.numpy(), top_p, rng) for _ in range(200)}
        assert draws <= nucleus, top_p  # the tiny top_p also exercises the sorting fallback


class FixedUniform:
    """A stand-in for random.Random whose random() is always ``u`` (1.0 lies outside
    random()'s [0, 1): the guard for a product rounded up to the total)."""

    def __init__(self, u: float):
        self.u = u

    def random(self) -> float:
        return self.u


def test_draws_follow_the_weights_across_blocks():
    """draw() finds the block of 256 weights first, then the word inside it: on 3,000
    weights with weightless words and blocks (the last one too), draws follow
    the weights word by word and block by block, and the extreme uniforms land on the
    first and the last word with weight."""
    torch.manual_seed(4)
    probs = (torch.randn(3000) * 1.5).exp()
    probs[::7] = 0
    probs[256:512] = 0
    probs[2816:] = 0  # the last block
    counts = draw_counts(lambda rng: draw(probs.numpy(), rng), DRAWS, 3000)
    ok, stats = fits(counts, probs, max_tv=1.0)  # word by word: the chi-square
    assert ok, f"words: {stats}"
    ok, stats = fits(counts.view(30, 100).sum(1), probs.view(30, 100).sum(1))
    assert ok, f"ranges of 100 words: {stats}"
    nonzero = torch.nonzero(probs).view(-1)
    assert draw(probs.numpy(), FixedUniform(0.0)) == int(nonzero[0]) == 1
    assert draw(probs.numpy(), FixedUniform(1.0)) == int(nonzero[-1]) == 2815


def test_nucleus_draws_follow_the_renormalised_nucleus():
    torch.manual_seed(3)
    probs = (torch.randn(40) * 1.5).softmax(-1)
    nucleus = sorted(reference_nucleus(probs, 0.8))
    expected = torch.zeros(40)
    expected[nucleus] = probs[nucleus] / probs[nucleus].sum()
    counts = draw_counts(lambda rng: draw_nucleus(probs.numpy(), 0.8, rng), DRAWS, 40)
    ok, stats = fits(counts, expected)
    assert ok, stats
    assert not fits(counts, probs)[0]  # the unfiltered distribution is told apart


def test_top_k_and_top_p_restrict_the_support():
    torch.manual_seed(1)
    log_probs = torch.randn(50).log_softmax(-1)
    top5 = set(torch.topk(log_probs, 5).indices.tolist())
    counts = draw_counts(lambda rng: sample_from_log_probs(
        log_probs.numpy(), rng, top_k=5, temperature=1.3), 2000, 50)
    assert set(torch.nonzero(counts).view(-1).tolist()) == top5
    nucleus = reference_nucleus(log_probs.exp(), 0.6)
    counts = draw_counts(lambda rng: sample_from_log_probs(log_probs.numpy(), rng, top_p=0.6),
                         2000, 50)
    assert set(torch.nonzero(counts).view(-1).tolist()) == nucleus


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_greedy_top_k_1_and_tiny_top_p_give_the_argmax(output):
    torch.manual_seed(2)
    model = LSTMLanguageModel(ModelConfig(emb=8, hidden=16, layers=1, tie_weights=False, output=output,
                                          cutoffs=[10, 30]), 60).eval()
    generator = Generator(model, word_vocab(60))
    rng = random.Random(0)
    for _ in range(20):
        h = torch.randn(1, 16) * 3
        with torch.no_grad():
            log_probs = model.log_probs(h)[0]
        log_probs[generator.vocab.unk_id] = -math.inf
        best = int(log_probs.argmax())
        for options in (SamplingOptions(temperature=0), SamplingOptions(top_k=1),
                        SamplingOptions(top_p=1e-6), SamplingOptions(temperature=0.5, top_k=1)):
            assert next_token(generator, h[0].numpy(), options, rng) == best, options


def test_greedy_adaptive_looks_into_the_tails():
    model, h = adaptive_model()
    with torch.no_grad():
        model.decoder.head.bias[11] += 2.0  # cluster 1 now holds most of the mass
        log_probs = model.log_probs(h)[0]
        assert int(log_probs.argmax()) >= 30  # the best word is a tail word here
    output, features = numpy_output(model.decoder), h[0].numpy()
    assert greedy_adaptive(output, features, []) == int(log_probs.argmax())
    best = int(log_probs.argmax())
    log_probs[best] = -math.inf
    assert greedy_adaptive(output, features, [best]) == int(log_probs.argmax())


# ---------------------------------------------------------------------- generator


def unk_loving_model(output: str, vocab: Vocabulary) -> LSTMLanguageModel:
    """A model that puts ~90% of the mass on <unk>, wherever its id lies."""
    torch.manual_seed(3)
    model = LSTMLanguageModel(ModelConfig(emb=8, hidden=16, layers=1, tie_weights=False, output=output,
                                          cutoffs=[10, 30]), len(vocab)).eval()
    unk = vocab.unk_id
    with torch.no_grad():
        if output == "full":
            model.decoder.bias[unk] = 8.0
        elif unk < 10:
            model.decoder.head = nn.Linear(16, 12)
            model.decoder.head.bias.zero_()
            model.decoder.head.bias[unk] = 8.0
        else:  # in the second tail cluster: make the cluster and <unk> in it likely
            model.decoder.head = nn.Linear(16, 12)
            model.decoder.head.bias.zero_()
            model.decoder.head.bias[11] = 8.0
            last = model.decoder.tail[1][1]
            model.decoder.tail[1][1] = nn.Linear(last.in_features, last.out_features)
            model.decoder.tail[1][1].weight.zero_()
            model.decoder.tail[1][1].bias.zero_()
            model.decoder.tail[1][1].bias[unk - 30] = 8.0
    return model


@pytest.mark.parametrize("output, unk_first", [("full", False), ("adaptive", True),
                                               ("adaptive", False)])
def test_unk_is_never_drawn_unless_allowed(output, unk_first):
    vocab = word_vocab(44, unk_first)
    generator = Generator(unk_loving_model(output, vocab), vocab)
    allowed = generator.generate("w1 w2", SamplingOptions(words=100, seed=0, allow_unk=True))
    assert allowed.tokens.count(UNK) > 60  # <unk> is what this model likes best
    for options in (SamplingOptions(words=100, seed=0), SamplingOptions(words=100, temperature=0),
                    SamplingOptions(words=100, temperature=0.8, top_p=0.95, seed=1),
                    SamplingOptions(words=100, top_k=3, seed=2)):
        assert UNK not in generator.generate("w1 w2", options).tokens, options


def test_stop_at_eos(tiny):
    _, model, vocab = tiny
    eos_model = LSTMLanguageModel(model.config, len(vocab)).eval()
    eos_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        head = nn.Linear(eos_model.decoder.head.in_features, eos_model.decoder.head.out_features)
        head.weight.zero_()
        head.bias.zero_()
        head.bias[vocab.eos_id] = 3.0  # p(<eos>) ~ 0.65
        eos_model.decoder.head = head
    generator = Generator(eos_model, vocab)
    for seed in range(5):
        stopped = generator.generate("the cat", SamplingOptions(words=40, seed=seed,
                                                                stop_at_eos=True)).tokens
        assert stopped[-1] == EOS and EOS not in stopped[:-1]
        full = generator.generate("the cat", SamplingOptions(words=40, seed=seed)).tokens
        assert len(full) == 40 and full[:len(stopped)] == stopped


def test_seeds_reproduce(tiny):
    _, model, vocab = tiny
    generator = Generator(model, vocab)
    for options in (SamplingOptions(words=30, seed=7), SamplingOptions(words=30, seed=7,
                                                                       temperature=0.8, top_p=0.9)):
        first = generator.generate("the cat", options).tokens
        torch.manual_seed(123)  # the global RNG plays no part
        assert generator.generate("the cat", options).tokens == first
    assert (generator.generate("the cat", SamplingOptions(words=30, seed=1)).tokens
            != generator.generate("the cat", SamplingOptions(words=30, seed=2)).tokens)


def engine_against_model(model: LSTMLanguageModel, vocab: Vocabulary, ids: list[int],
                         primed: int) -> tuple[float, float]:
    """The numpy engine primed with ids[:primed], then stepped through the rest, against
    model.forward and model.log_probs over all of ids: the largest differences of the
    features and of the log-probabilities."""
    engine = Generator(model, vocab).engine()
    with torch.no_grad():
        features = model(torch.tensor(ids).view(-1, 1)).features[:, 0]  # (T, D)
        log_probs = model.log_probs(features)  # (T, V)
    step = FusedStep(engine.step)
    ours = [step.prime(ids[:primed])] + [step(token) for token in ids[primed:]]
    rows = range(primed - 1, len(ids))
    worst_features = max(float(np.abs(f - features[t].numpy()).max()) for f, t in zip(ours, rows))
    worst_log_probs = max(float(np.abs(engine.output.log_probs(f) - log_probs[t].numpy()).max())
                          for f, t in zip(ours, rows))
    return worst_features, worst_log_probs


# The engine against the torch model, one case per value worth trying of every ModelConfig
# field, each varied alone on a small base: a field added to ModelConfig fails here until
# the engine declares it (lstmlm.generate.engine.IMPLEMENTED) and computes it as the model
# does. A list field needs its values named here.
ENGINE_BASE = dict(emb=8, hidden=12, layers=2, tie_weights=True, output="adaptive",
                   cutoffs=[5, 12], div_value=2.0)
LIST_VALUES = {"cutoffs": ([5, 12], [0.3], [3, 9, 20])}


def engine_cases() -> list[tuple[str, object]]:
    import typing

    hints = typing.get_type_hints(ModelConfig)
    cases = []
    for field in dataclasses.fields(ModelConfig):
        meta, kind = field.metadata, hints[field.name]
        base = ENGINE_BASE.get(field.name, field.default)
        if meta.get("choices"):
            values = meta["choices"]
        elif kind is bool:
            values = (True, False)
        elif typing.get_origin(kind) is list:
            values = LIST_VALUES.get(field.name, ())
            assert values, f"model.{field.name}: name its values in LIST_VALUES"
        elif kind is int:
            values = (base, base + 1)
        else:  # a float: the base, and one more inside its range
            high = meta.get("high")
            values = (base, (base + high) / 2 if high is not None else base + 0.5)
        cases += [(field.name, value) for value in values]
    return cases


@pytest.mark.parametrize("field, value", engine_cases(), ids=lambda v: str(v))
def test_the_numpy_engine_computes_what_the_model_does_for_every_config_field(
        tiny, monkeypatch, field, value):
    """The numpy engine's LSTM step, priming and output layer against model.forward and
    model.log_probs, to float32 rounding; the input table short (3 rows), so that most
    ids take the paths beyond it."""
    from lstmlm.generate import engine

    monkeypatch.setattr(engine, "INPUT_TABLE_ROWS", 3)
    _, _, vocab = tiny
    config = ModelConfig(**{**ENGINE_BASE, field: value}).for_vocab(len(vocab))
    torch.manual_seed(0)
    model = LSTMLanguageModel(config, len(vocab)).eval()
    ids = torch.randint(0, len(vocab), (23,)).tolist()
    worst_features, worst_log_probs = engine_against_model(model, vocab, ids, primed=9)
    assert worst_features < 1e-5 and worst_log_probs < 1e-5, (config, worst_features,
                                                             worst_log_probs)


def test_the_numpy_engine_with_the_whole_input_table_and_an_untied_full_softmax(tiny):
    _, model, vocab = tiny
    for config in (model.config, ModelConfig(emb=8, hidden=12, layers=1, output="full",
                                             tie_weights=False)):
        torch.manual_seed(0)
        m = LSTMLanguageModel(config, len(vocab)).eval()
        ids = torch.randint(0, len(vocab), (23,)).tolist()
        assert max(engine_against_model(m, vocab, ids, primed=9)) < 1e-5, config


@dataclasses.dataclass(frozen=True)
class ModelConfigWithANewField(ModelConfig):
    """What ModelConfig would be with a new feature the engine has not learnt."""

    layer_norm: bool = False


def test_a_model_the_engine_does_not_implement_is_refused_in_one_line(tiny, tmp_path,
                                                                      monkeypatch, capsys):
    """Loading refuses, in one line, a config with a field or a value the engine does not
    declare, or weights it does not read; nothing is generated."""
    from lstmlm.generate import engine
    from lstmlm.generate.command import main as generate_main

    root, model, vocab = tiny
    refusals = []
    # A field it does not know (ModelConfig grew one).
    weights, _, _ = load_weights(root / "model.pt")
    with pytest.raises(engine.EngineError) as caught:
        Generator(Weights(ModelConfigWithANewField(**dataclasses.asdict(weights.config)),
                          weights.arrays), vocab).engine()
    refusals.append(str(caught.value))
    # A weight the config calls for that it does not read (a new layer's, say).
    with pytest.raises(engine.EngineError) as caught:
        Generator(Weights(weights.config, {**weights.arrays, "lstms.0.gain": np.ones(24)}),
                  vocab).engine()
    refusals.append(str(caught.value))
    # A value it does not run, from a checkpoint file, by the command.
    monkeypatch.setitem(engine.IMPLEMENTED, "output", ("full",))
    with pytest.raises(engine.EngineError) as caught:
        generate_main(["--model", str(root / "model.pt"), "the cat"])
    refusals.append(str(caught.value))
    assert capsys.readouterr().out == ""
    assert "layer_norm" in refusals[0] and "lstms.0.gain" in refusals[1]
    assert "model.output: 'adaptive'" in refusals[2]
    assert all("\n" not in r and "engine.py" in r for r in refusals), refusals


def test_the_numpy_engine_on_a_default_shaped_model():
    """The default model's shape (33,278 words, emb 256, hidden 512, tied adaptive input
    and softmax; random weights, log-probabilities from -19 to -6), ids in the head, both
    tail clusters and at their edges: the engine's log-probs are the torch model's to
    float32 rounding (measured: 4e-6, two ulps of numbers near 16)."""
    torch.manual_seed(0)
    vocab = word_vocab(33_278)
    model = LSTMLanguageModel(ModelConfig().for_vocab(len(vocab)), len(vocab),
                             init_weights=False).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    ids = [0, 5, 1999, 2000, 2001, 9999, 10_000, 33_277] + torch.randint(0, 33_278, (8,)).tolist()
    worst_features, worst_log_probs = engine_against_model(model, vocab, ids, primed=4)
    assert worst_features < 1e-5 and worst_log_probs < 2e-5, (worst_features, worst_log_probs)


def test_prompts_unknown_words_and_odd_text(tiny):
    _, model, vocab = tiny
    generator = Generator(model, vocab)
    ids, unknown = generator.encode_prompt("the Zorblax cat Zorblax ate")
    assert ids == [vocab.eos_id] + vocab.encode(["the", "Zorblax", "cat", "Zorblax", "ate"])
    assert unknown == ["Zorblax", "ate"]
    assert generator.encode_prompt("") == ([vocab.eos_id], [])
    options = SamplingOptions(words=5, seed=0)
    for prompt in ("", "qwerty zxcv", "🙂 שָׁלוֹם مرحبا e\u0301\u0301", "a\x00b\ttab\r\n",
                   "the cat " * 12_000):  # the last is ~100 KB, 24k tokens
        generation = generator.generate(prompt, options)
        assert len(generation.tokens) == 5
        assert isinstance(generation.text, str)
    assert generator.generate("🙂 x", options).unknown_words == ["🙂", "x"]


@pytest.mark.parametrize("bad", [dict(words=0), dict(words=-1), dict(words=2.5),
                                 dict(temperature=-0.1), dict(temperature=math.nan),
                                 dict(temperature=math.inf), dict(top_k=-1), dict(top_p=0),
                                 dict(top_p=1.01), dict(top_p=math.nan), dict(seed="1")])
def test_bad_options_are_refused(bad):
    with pytest.raises(LstmlmError):
        SamplingOptions(**bad)


def test_load_finds_and_checks_the_vocabulary(tiny, tmp_path):
    root, model, vocab = tiny
    loaded, loaded_vocab, info = load(root / "model.pt")
    assert loaded_vocab == vocab and info["epoch"] == 1
    ids = torch.randint(0, len(vocab), (9, 2))
    with torch.no_grad():  # built without init, weights assigned: the same model
        assert torch.equal(loaded(ids)[0], model(ids)[0])
    generator = Generator.load(root / "model.pt")
    assert generator.vocab == vocab and generator.info == {"epoch": 1}
    # Moved elsewhere, alone: the vocabulary is inside (tests/test_checkpoint.py).
    moved = tmp_path / "moved"
    moved.mkdir()
    save_checkpoint(moved / "model.pt", model, vocab)
    assert load(moved / "model.pt").vocab == vocab
    tied = LSTMLanguageModel(ModelConfig(emb=8, hidden=12, output="full", tie_weights=True),
                             len(vocab))
    save_checkpoint(tmp_path / "tied.pt", tied, vocab)
    loaded = load(tmp_path / "tied.pt").model
    assert loaded.decoder.weight is loaded.encoder.weight
    assert torch.equal(loaded.encoder.weight, tied.encoder.weight)
    other = word_vocab(len(vocab))
    other.save(tmp_path / "other.json")
    with pytest.raises(CheckpointError, match="trained with another vocabulary"):
        load(root / "model.pt", tmp_path / "other.json")


def test_two_saves_of_the_same_model_are_byte_identical(tiny, tmp_path):
    """torch.save records the file's name inside its zip archive: saving to a temporary
    file with a random name gave different bytes for the same weights (issue 13)."""
    root, model, vocab = tiny
    for name in ("a.pt", "b.pt", "sub/c.pt"):
        save_checkpoint(tmp_path / name, model, vocab, {"epoch": 1})
    first = (tmp_path / "a.pt").read_bytes()
    assert first == (tmp_path / "b.pt").read_bytes() == (tmp_path / "sub/c.pt").read_bytes()
    assert first == (root / "model.pt").read_bytes()  # the fixture's save, another directory
    assert load(tmp_path / "b.pt").info == {"epoch": 1}
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file is gone


def test_weights_that_are_not_finite_are_refused(tiny, tmp_path):
    """A NaN checkpoint printed "the the the ..." at temperature 0 (issue 13): refused at
    load, and a model built in code with NaN weights refuses to draw at any temperature."""
    root, model, vocab = tiny
    broken = LSTMLanguageModel(model.config, len(vocab)).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.lstms[1].weight_hh_l0[0, 0] = math.nan
    save_checkpoint(tmp_path / "nan.pt", broken, vocab)
    with pytest.raises(CheckpointError, match="not finite.*lstms.1.weight_hh_l0"):
        load(tmp_path / "nan.pt")
    generator = Generator(broken, vocab)
    for options in (SamplingOptions(temperature=0), SamplingOptions(temperature=1, top_p=1),
                    SamplingOptions()):
        with pytest.raises(LstmlmError, match="not finite"):
            generator.generate("the cat", options)
    result = run_cli("generate", "--model", str(tmp_path / "nan.pt"), "--temperature", "0", "hi")
    assert_clean_error(result, "nan.pt", "not finite")


def test_options_as_keywords_and_one_set_of_defaults(tiny):
    from lstmlm.generate.command import generate_parser

    _, model, vocab = tiny
    generator = Generator(model, vocab)
    assert (generator.generate("the cat", words=12, seed=4).tokens
            == generator.generate("the cat", SamplingOptions(words=12, seed=4)).tokens)
    assert len(list(generator.stream("the cat", words=7))) == 7
    with pytest.raises(LstmlmError, match="sample.top_p"):
        generator.generate("the cat", top_p=0)
    defaults = generate_parser().parse_args([])
    assert FRESH == SamplingOptions(seed=None)  # the sample section's, but a fresh seed
    for name, value in vars(FRESH).items():
        assert getattr(defaults, name) == value, name


def test_without_a_seed_a_fresh_text_and_the_seed_that_draws_it_again(tiny, capsys):
    """One rule for the API and the command (the page: test_serve.py): no seed, a fresh
    text each time and the seed it was drawn with; given that seed, the same text."""
    from lstmlm.generate.command import main as generate_main

    root, model, vocab = tiny
    generator = Generator(model, vocab)
    first, second = (generator.generate("the cat", words=30) for _ in range(2))
    assert first.seed != second.seed and first.tokens != second.tokens
    assert generator.generate("the cat", words=30, seed=first.seed).tokens == first.tokens
    stream = generator.stream("the cat", words=30)
    assert list(stream) == generator.generate("the cat", words=30, seed=stream.seed).tokens
    # The text with the prompt (as the command prints it) and without (as .text always was).
    # Only the whitespace that joins them depends on the draw: a space before a word, a line
    # break before a drawn <eos>, nothing before punctuation.
    assert first.text == first.continuation == detokenise(first.tokens)
    for drawn in (first, second):
        assert drawn.full_text.startswith("the cat")
        squeezed = re.sub(r"\s", "", drawn.full_text)
        assert squeezed == "thecat" + re.sub(r"\s", "", drawn.continuation)

    command = ["--model", str(root / "model.pt"), "--words", "30", "the cat"]
    runs = []
    for _ in range(2):
        assert generate_main(command) == 0
        out, err = capsys.readouterr()
        runs.append((int(re.search(r"note: seed (\d+) \(--seed \1 draws", err)[1]), out))
    (seed, text), (other_seed, other_text) = runs
    assert seed != other_seed and text != other_text
    assert generate_main([*command, "--seed", str(seed)]) == 0
    out, err = capsys.readouterr()
    assert out == text == generator.generate("the cat", words=30, seed=seed).full_text + "\n"
    assert "seed" not in err  # a seed given is not told back


# ---------------------------------------------------------------------- command line


def start_cli(*args: str,
              stdin: str | None = None) -> Callable[[], subprocess.CompletedProcess]:
    """Start ``python -m lstmlm ARGS``; the returned function waits for its result. Starting
    several before waiting lets them load torch side by side."""
    command = [sys.executable, "-m", "lstmlm", *args]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, encoding="utf-8",
                               env={**os.environ, "PYTHONIOENCODING": "utf-8"})

    def result() -> subprocess.CompletedProcess:
        stdout, stderr = process.communicate(stdin, timeout=120)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    return result


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return start_cli(*args, stdin=stdin)()


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


WITHOUT_TORCH = watching_torch("lstmlm")


def start_watched(*args: str, before: str = "") -> subprocess.Popen:
    """``python -m lstmlm ARGS`` under WITHOUT_TORCH (after ``before``, Python code)."""
    return subprocess.Popen([sys.executable, "-c", before + WITHOUT_TORCH, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_command_never_imports_torch(tiny):
    """Importing torch alone takes longer than the command's start-up may (issue 24):
    `python -m lstmlm generate` reads the checkpoint, primes and draws on every path
    (the adaptive sampler, greedy, top-k's full distribution) without it. The check
    itself sees torch when it is imported."""
    root, _, _ = tiny
    common = ["generate", "--model", str(root / "model.pt"), "--words", "20", "the cat"]
    runs = [start_watched(*common), start_watched(*common, "--temperature", "0"),
            start_watched(*common, "--top-k", "5", "--allow-unk"),
            start_watched(*common, before="import torch\n")]  # the check's own check
    results = [run.communicate(timeout=120) + (run.returncode,) for run in runs]
    for out, err, code in results:
        assert code == 0 and out.startswith("the cat") and "Traceback" not in err, err
    assert [err.splitlines()[-1] for _, err, _ in results] == ["torch never imported"] * 3 + [
        "torch imported"]


def test_the_page_never_imports_torch(tiny):
    """`python -m lstmlm serve`, from its start to its answers (the model's settings, a
    text streamed), never imports torch either."""
    pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    from helpers_serve import call, events

    root, _, vocab = tiny
    serve = start_watched("serve", "--model", str(root / "model.pt"), "--port", "0")
    try:
        ready, _, _ = select.select([serve.stdout], [], [], 120)
        line = serve.stdout.readline() if ready else ""
        assert line.startswith("serving "), (line, serve.poll())
        port = int(line.split()[3].rstrip("/").rsplit(":", 1)[1])
        status, _, body = call(port, "GET", "/api/info")
        assert status == 200 and json.loads(body)["vocab_size"] == len(vocab)
        status, _, body = call(port, "POST", "/api/generate",
                               json.dumps({"prompt": "the cat", "words": 5}),
                               {"Content-Type": "application/json"})
        assert status == 200 and events(body)[-1] == ("done", events(body)[-1][1])
        assert events(body)[-1][1]["words"] == 5
    finally:
        serve.send_signal(signal.SIGINT)  # Ctrl-C: the server ends (status 130), atexit reports
        _, err = serve.communicate(timeout=60)
    assert serve.returncode == 130 and err.splitlines()[-1] == "torch never imported", err


def test_cli_help():
    result = run_cli("--help")
    assert result.returncode == 0 and "generate" in result.stdout
    result = run_cli("generate", "--help")
    assert result.returncode == 0
    for option in ("--model", "--words", "--temperature", "--top-k", "--top-p", "--seed",
                   "--vocab", "--allow-unk", "--stop-at-eos", "--raw", "--stream",
                   "--interactive"):
        assert option in result.stdout, option


@pytest.mark.parametrize("args, needle", [
    (["--words", "0"], "--words"), (["--words", "-5"], "--words"),
    (["--words", "ten"], "--words"), (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"), (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"), (["--top-k", "-1"], "--top-k"),
    (["--seed", "x"], "--seed"), (["--bogus"], "--bogus"),
    (["--temperature", "1e-40"], "0.001 to 1000"), (["--temperature", "1e39"], "0.001 to 1000"),
])
def test_cli_refuses_bad_options(args, needle):
    assert_clean_error(run_cli("generate", "--model", "nowhere.pt", "hi", *args), needle)


def test_cli_generates_reproducibly_streams_and_reads_stdin(tiny):
    """One set of prompts (odd ones included), given as arguments, and again streamed and
    read from stdin by another process: with the same seed, the very same output."""
    root, _, _ = tiny
    big = "the cat sees a dog . " * 5_000  # ~100 KB
    prompts = ["the cat", "", "Zorblax qwerty", "🙂 שָׁלוֹם e\u0301 مرحبا", big]
    common = ["generate", "--model", str(root / "model.pt"), "--words", "25", "--seed", "3",
              "--temperature", "0.9", "--top-p", "0.95", "--top-k", "30"]
    runs = [start_cli(*common, *prompts),
            start_cli(*common, "--stream", "--interactive", stdin="\n".join(prompts) + "\n")]
    first, streamed = (run() for run in runs)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert "Zorblax, qwerty" in first.stderr and "🙂" in first.stderr  # named unknown words
    position = 0
    for prompt in prompts:  # each text starts with its prompt, in order
        position = first.stdout.index(prompt, position) + len(prompt)
    assert first.stdout.startswith("the cat") and len(first.stdout) > len(big)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == first.stdout  # --seed reproduces, --stream prints the same
    assert streamed.stderr == first.stderr  # the same notes on unknown words


def test_cli_raw_interactive_and_control_characters(tiny, monkeypatch, capsys):
    """In-process (no subprocess needed): --raw, and a NUL and RTL override read from stdin."""
    from lstmlm.generate.command import main as generate_main

    root, _, vocab = tiny
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat\nshe likes\x00 \u202eevil\n"))
    assert generate_main(["--model", str(root / "model.pt"), "--interactive", "--raw",
                          "--words", "7", "--seed", "0", "--allow-unk"]) == 0
    out, err = capsys.readouterr()
    blocks = out.split("\n\n")
    assert len(blocks) == 2
    for block in blocks:
        tokens = block.strip("\n").split(" ")
        assert len(tokens) == 7 and all(t in vocab.index for t in tokens)
    assert "likes\\x00" in err and "\\u202eevil" in err  # named, escaped


def test_cli_bad_checkpoints_and_vocabularies(tiny, tmp_path):
    root, _, vocab = tiny
    model = root / "model.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model.read_bytes()[:2000])
    other = tmp_path / "other.json"
    word_vocab(len(vocab)).save(other)
    cases = [
        (["--model", str(tmp_path / "missing.pt")], ["missing.pt", "not found"]),
        (["--model", str(model), "--vocab", str(tmp_path / "missing.json")],
         ["missing.json", "not found"]),
        (["--model", str(truncated)], ["truncated.pt", "truncated"]),
        (["--model", str(model), "--vocab", str(other)],
         ["other.json", "trained with another vocabulary"]),
    ]
    runs = [start_cli("generate", *args, "hi") for args, _ in cases]
    for run, (_, needles) in zip(runs, cases):
        assert_clean_error(run(), *needles)


def test_cli_writes_or_drops_headings():
    from lstmlm.generate.command import _pieces, generate_parser

    tokens = ["sat", ".", EOS, "=", "=", "History", "=", "=", EOS, "It", "'s", '"', "done", '"']
    assert "".join(_pieces("The cat", tokens, False, "wikitext")) == (
        'The cat sat.\n== History ==\nIt\'s "done"')
    assert "".join(_pieces("The cat", tokens, False, "wikitext", headings=False)) == (
        'The cat sat.\nIt\'s "done"')
    assert "".join(_pieces("The cat", tokens[:2], True, "wikitext")) == "sat ."
    assert generate_parser().parse_args(["--no-headings"]).headings is False


def test_cli_never_advises_loading_an_untrusted_file_unsafely(tiny, tmp_path):
    """torch.load's message advises retrying with weights_only=False (or allow-listing the
    file's globals): running code from an unknown file. The message keeps only the reason
    (issue 13)."""
    import argparse as argparse_module

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage\n" * 10)
    pickled = tmp_path / "object.pt"
    torch.save(argparse_module.Namespace(a=1), pickled)  # a zip archive with a Python object
    runs = [start_cli("generate", "--model", str(path), "hi") for path in (garbage, pickled)]
    for run, path in zip(runs, (garbage, pickled)):
        result = run()
        assert_clean_error(result, path.name, "not a readable checkpoint")
        for advice in ("weights_only", "trust", "safe_globals", "arbitrary code"):
            assert advice not in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "argparse.Namespace" in result.stderr  # what the file holds, named


def test_cli_double_dash_ends_the_options_and_threads_are_bounded(tiny):
    root, _, _ = tiny
    model = str(root / "model.pt")
    runs = [start_cli("generate", "--model", model, "--words", "5", "--seed", "0", "--",
                      "-hello", "--words"),
            start_cli("generate", "--model", model, "--threads", "100000", "hi"),
            start_cli("generate", "--model", model, "--threads", "-1", "hi")]
    dashed, many, negative = (run() for run in runs)
    assert dashed.returncode == 0, dashed.stderr
    texts = dashed.stdout.split("\n\n")
    assert len(texts) == 2 and texts[0].startswith("-hello") and texts[1].startswith("--words")
    assert "-hello" in dashed.stderr  # the unknown words are named, so it was read as a prompt
    assert_clean_error(many, "--threads", "100000", "at most")  # was SIGSEGV
    assert_clean_error(negative, "--threads")


def test_sample_stage_prints_a_long_prompt_cut_short(tiny, tmp_path):
    """A prompt of 80 KB was echoed whole on one line (issue 13)."""
    import yaml

    root, _, _ = tiny
    long_prompt = "the cat sees a dog . " * 4000
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"sample": {"words": 6, "seed": 0}, "prompts": ["the cat", long_prompt]}))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "sample.py"), "--params", "params.yaml",
         "--vocab", str(root / "vocab.json"), "--checkpoint", str(root / "model.pt"),
         "--out", "samples.md"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's lstmlm
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(len(line) < 200 for line in lines), lines
    assert "84,000 characters" in lines[1]
    samples = (tmp_path / "samples.md").read_text(encoding="utf-8")
    assert f"**{long_prompt.strip()}**" in samples  # the file keeps the whole prompt once
    assert max(len(line) for line in samples.splitlines() if line.startswith("#")) < 200
