"""Evaluation-time adaptation (lstmlm.evaluate.adaptation): the neural cache and dynamic evaluation.

Tiny untrained models on short streams, in seconds. Scores are indexed like the (T, B)
stream: the score of token data[r, b] is row r - 1 of the (N, B) log-probs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_MODEL, write_tiny_corpus
from lstmlm.core.checkpoint import save_checkpoint
from lstmlm.core.params import ParamsError, parse_section
from lstmlm.data.streams import batchify, load_ids
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.tokenise import tokenise_corpus
from lstmlm.evaluate.adaptation import (
    DynamicRule,
    adapt_test,
    adapt_valid,
    adapted_metrics,
    adapted_weights,
    cache_log_probs,
    choose_cache,
    dynamic_log_probs,
    dynamic_rule,
    gradient_rms,
    mix,
    stream_loss,
)
from lstmlm.evaluate.config import EvaluateConfig
from lstmlm.evaluate.perplexity import evaluate_loss
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 30
MODEL = {**TINY_MODEL, "cutoffs": [10, 20]}
BPTT = 6
THETA, LAMBDA, WINDOW = 0.5, 0.3, 12
LR, DECAY, EPSILON, SEGMENT = 0.01, 0.02, 1e-2, 4


def tiny_model(vocab: int = VOCAB, seed: int = 0) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    return LSTMLanguageModel(parse_section("model", MODEL, ModelConfig), vocab).eval()


def zipf_stream(n: int, seed: int, vocab: int = VOCAB) -> np.ndarray:
    """Word ids with a skewed frequency, as text has."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    return rng.choice(vocab, size=n, p=p / p.sum()).astype(np.int64)


def repeated_passage(seed: int, vocab: int = 200) -> np.ndarray:
    """40 random words, then a 40-word passage three times: only what was read predicts it."""
    rng = np.random.default_rng(seed)
    passage = rng.integers(0, vocab, 40)
    return np.concatenate([rng.integers(0, vocab, 40), passage, passage, passage])


def krause_rule(model, lr: float = LR, decay: float = DECAY) -> DynamicRule:
    """The RMS rule, its statistics from a tiny training stream of its own."""
    rms = gradient_rms(model, batchify(zipf_stream(400, 99, model.vocab_size), 4), SEGMENT, 10)
    return DynamicRule.from_rms(rms, lr, decay, EPSILON)


def static_pass(model, data) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The static loss, log p(target) (N, B) and features (N, B, D) of one stream."""
    kept: list = []
    loss = evaluate_loss(model, data, BPTT, kept)
    features, log_probs = (torch.cat(parts) for parts in zip(*kept))
    return loss, log_probs, features


def scores(model, data, method: str) -> torch.Tensor:
    """log p(target) (N, B) of one method with the fixed settings above."""
    if method == "cache":
        _, lp, features = static_pass(model, data)
    else:
        lp, features = dynamic_log_probs(model, data, krause_rule(model), SEGMENT,
                                         keep_features=True)
    if method == "dynamic":
        return lp
    return mix(lp, cache_log_probs(features, data[1:], lp, WINDOW, [THETA])[0], LAMBDA)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the cache's maths


def cache_by_loop(features, targets, model_lp, window: int, theta: float) -> torch.Tensor:
    """The cache's p(target), written straight from the formula, one position at a time."""
    n, b, _ = features.shape
    out = torch.empty(n, b, dtype=torch.float64)
    for col in range(b):
        for t in range(n):
            lo = max(0, t - window)
            if t == lo:  # empty cache: the model alone
                out[t, col] = model_lp[t, col]
                continue
            attention = torch.softmax(theta * (features[lo:t, col].double()
                                               @ features[t, col].double()), 0)
            out[t, col] = attention[targets[lo:t, col] == targets[t, col]].sum().log()  # 0: -inf
    return out


@pytest.mark.parametrize("n, b, window, block", [(30, 3, 7, 50), (30, 2, 100, 1 << 22),
                                                 (25, 1, 5, 5), (40, 4, 1, 16)])
def test_cache_matches_the_formula_written_as_a_loop(monkeypatch, n, b, window, block):
    """Blocks, the strided window band and the padding give the formula's numbers, for
    windows shorter and longer than the stream and blocks of one row or all rows."""
    monkeypatch.setattr("lstmlm.evaluate.adaptation.BLOCK_ELEMENTS", block)
    torch.manual_seed(n + b)
    features, targets = torch.randn(n, b, 6), torch.randint(0, 4, (n, b))
    model_lp = -torch.rand(n, b)
    got = cache_log_probs(features, targets, model_lp, window, [0.5, 2.0])
    for j, theta in enumerate([0.5, 2.0]):
        want = cache_by_loop(features, targets, model_lp, window, theta)
        assert torch.allclose(got[j].double(), want, atol=1e-5)  # -inf (no match) included


def test_cache_lowers_perplexity_on_a_repeated_passage():
    model = tiny_model(200)
    valid, test = (batchify(repeated_passage(seed), 1) for seed in (1, 2))
    config = EvaluateConfig(bptt=BPTT, cache_window=100, cache_thetas=[1.0, 100.0],
                            cache_lambdas=[0.0, 0.3, 0.6], dynamic_lr=0.0)
    quiet = lambda line: None  # noqa: E731
    static = evaluate_loss(model, valid, BPTT, kept := [])
    results, choices = adapt_valid(model, valid, kept, config, log=quiet)
    assert results["cache"]["loss"] < static - 0.5
    assert choices["cache"].lam > 0
    static = evaluate_loss(model, test, BPTT, kept := [])
    assert adapt_test(model, test, kept, config, None, choices, quiet)["cache"]["loss"] < static - 0.5


def test_dynamic_evaluation_lowers_perplexity_on_a_repeated_passage():
    model = tiny_model(200)
    data = batchify(repeated_passage(3), 1)
    lp, _ = dynamic_log_probs(model, data, krause_rule(model, decay=0.0), segment=5)
    assert stream_loss(lp, BPTT) < evaluate_loss(model, data, BPTT) - 0.5


def test_dynamic_evaluation_leaves_the_model_unchanged():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rule = krause_rule(model)
    dynamic_log_probs(model, batchify(zipf_stream(60, 4), 2), rule, SEGMENT)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.encoder.weight.requires_grad


def test_an_untied_table_is_not_adapted_and_a_tied_model_adapts_every_weight():
    untied = tiny_model()
    assert untied.encoder.weight not in set(adapted_weights(untied))
    assert len(adapted_weights(untied)) == len(list(untied.parameters())) - 1
    torch.manual_seed(0)
    tied = LSTMLanguageModel(parse_section("model", {**MODEL, "tie_weights": True},
                                           ModelConfig), VOCAB)
    assert tied.encoder is None and adapted_weights(tied) == list(tied.parameters())


def test_gradient_rms_is_the_root_mean_square_of_each_batchs_gradient():
    """Two batches, state carried: the RMS of the two gradients, weight by weight."""
    model = tiny_model()
    train = batchify(zipf_stream(90, 12), 3)
    params = adapted_weights(model)
    state, grads = model.init_state(3), []
    for i in (0, SEGMENT):
        out = model(train[i:i + SEGMENT], state)
        loss = -model.target_log_probs(out.features, train[i + 1:i + 1 + SEGMENT]).mean()
        grads.append(torch.autograd.grad(loss, params, allow_unused=True))
        state = [(h.detach(), c.detach()) for h, c in out.state]
    rms = gradient_rms(model, train, SEGMENT, batches=2)
    for k, r in enumerate(rms):
        g1, g2 = (torch.zeros_like(params[k]) if g[k] is None else g[k] for g in grads)
        assert torch.allclose(r, ((g1 ** 2 + g2 ** 2) / 2).sqrt(), rtol=1e-5, atol=1e-8)


def test_the_rule_scales_each_step_by_the_weights_rms_and_caps_the_pull_at_1():
    """w ← w - lr g / (rms + ε) + min(1, decay rms / r̄) (w_0 - w), element by element."""
    rms = [torch.tensor([1.0, 4.0]), torch.tensor([0.0, 1000.0])]  # r̄ = (2.5 + 500) / 2
    rule = DynamicRule.from_rms(rms, lr=0.1, decay=0.5, epsilon=1.0)
    w, w0 = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], [torch.zeros(2)] * 2
    g = [torch.tensor([2.0, 5.0]), None]  # None: a weight the segment did not use
    rule.step(w, g, w0)
    mean = (2.5 + 500) / 2
    want0 = [x - 0.5 * r / mean * x - 0.1 * gi / (r + 1) for x, r, gi in
             zip((1.0, 2.0), (1.0, 4.0), (2.0, 5.0))]
    assert torch.allclose(w[0], torch.tensor(want0))
    assert torch.allclose(w[1], torch.tensor([3.0, 0.0]))  # pull 0, and capped at 1


def test_the_stages_rule_reads_the_first_training_tokens_only():
    """dynamic_stat_tokens bounds what the RMS sees: text after it changes nothing."""
    model = tiny_model()
    ids = zipf_stream(3000, 13)
    config = EvaluateConfig(dynamic_segment=SEGMENT, dynamic_stat_tokens=400)
    changed = ids.copy()
    changed[1000:] = (changed[1000:] + 1) % VOCAB
    a, b = (dynamic_rule(model, x, config) for x in (ids, changed))
    assert a.stat_tokens == 400  # one batch: 100 streams x 4 tokens
    assert all(torch.equal(x, y) for x, y in zip(a.steps + a.pulls, b.steps + b.pulls))
    changed[:10] = (changed[:10] + 1) % VOCAB
    c = dynamic_rule(model, changed, config)
    assert not all(torch.equal(x, y) for x, y in zip(a.steps, c.steps))


# --------------------------------------------------------------------------- off = static


def test_window_0_and_lr_0_reproduce_the_static_numbers_exactly():
    model = tiny_model()
    data = batchify(zipf_stream(200, 5), 3)
    static = evaluate_loss(model, data, BPTT)
    kept_loss, lp, features = static_pass(model, data)
    assert kept_loss == static and stream_loss(lp, BPTT) == static
    cache = cache_log_probs(features, data[1:], lp, 0, [THETA, 1.0])
    assert torch.equal(cache[0], lp) and torch.equal(cache[1], lp)
    assert torch.equal(mix(lp, cache[0], 0.5), lp)
    assert torch.equal(mix(lp, cache_log_probs(features, data[1:], lp, WINDOW, [THETA])[0],
                           0.0), lp)
    still = krause_rule(model, lr=0.0)
    dynamic, _ = dynamic_log_probs(model, data, still, segment=BPTT)
    # Dynamic evaluation scores with gradients on: oneDNN's training-mode LSTM, which on
    # an AVX2-only CPU (AMD EPYC) differs from the inference one by a float32 ulp.
    assert math.isclose(stream_loss(dynamic, BPTT), static, rel_tol=1e-7)
    # Other segment lengths are other matrix shapes: equal up to fp32 rounding.
    dynamic, _ = dynamic_log_probs(model, data, still, segment=SEGMENT)
    assert stream_loss(dynamic, BPTT) == pytest.approx(static, rel=1e-6)


def test_keeping_the_log_probs_keeps_the_full_softmax_loss_to_rounding():
    torch.manual_seed(0)
    config = parse_section("model", {**MODEL, "output": "full"}, ModelConfig)
    model = LSTMLanguageModel(config, VOCAB).eval()
    data = batchify(zipf_stream(200, 5), 3)
    assert static_pass(model, data)[0] == pytest.approx(evaluate_loss(model, data, BPTT),
                                                        rel=1e-6)


# --------------------------------------------------------------------------- no peeking


@pytest.mark.parametrize("method", ["cache", "dynamic", "dynamic+cache"])
def test_perturbing_a_token_changes_no_score_up_to_its_row(method):
    """Changing data[r, b] leaves every score of rows <= r alone, except its own (its
    target changed): no token reaches back, nor into the scores beside it."""
    model = tiny_model()
    data = batchify(zipf_stream(90, 6), 3)
    base = scores(model, data, method)
    for r, b in ((5, 0), (9, 1), (14, 2), (20, 1)):  # mid-segment, segment ends, later
        changed = data.clone()
        changed[r, b] = (changed[r, b] + 7) % VOCAB
        after = scores(model, changed, method)
        assert torch.equal(after[:r - 1], base[:r - 1]), (r, b)
        others = [c for c in range(data.size(1)) if c != b]
        assert torch.equal(after[r - 1, others], base[r - 1, others]), (r, b)
        assert not torch.equal(after[r:], base[r:]), (r, b)  # the test can see a change


@pytest.mark.parametrize("method", ["cache", "dynamic", "dynamic+cache"])
def test_no_token_influences_its_own_score(method):
    """Over every word the token data[r, b] could be, its probabilities add up to 1: its
    score comes from a distribution fixed before it was read (a cache that held the token
    itself, or an update before scoring, would give more than 1)."""
    model = tiny_model()
    for r, b in ((6, 0), (11, 1)):  # after a segment ends (dynamic), mid-segment
        data = batchify(zipf_stream(60, 7), 2)[:r + 1]  # later rows cannot matter (above)
        total = 0.0
        for word in range(VOCAB):
            changed = data.clone()
            changed[r, b] = word
            total += math.exp(scores(model, changed, method)[r - 1, b])
        assert total == pytest.approx(1.0, abs=1e-4), (r, b)


def test_the_grid_choice_uses_valid_only():
    """Two different test streams: the same (θ, λ) and the same valid numbers."""
    model = tiny_model()
    config = EvaluateConfig(bptt=BPTT, cache_window=WINDOW, cache_thetas=[0.3, 1.0],
                            cache_lambdas=[0.1, 0.3], dynamic_segment=SEGMENT)
    rule = krause_rule(model)
    valid = batchify(repeated_passage(8, VOCAB), 2)
    runs = []
    for seed in (9, 10):
        evaluate_loss(model, valid, BPTT, kept := [])
        valid_results, choices = adapt_valid(model, valid, kept, config, rule, lambda line: None)
        test = batchify(zipf_stream(80, seed), 1)
        evaluate_loss(model, test, BPTT, kept := [])
        test_results = adapt_test(model, test, kept, config, rule, choices, lambda line: None)
        runs.append(adapted_metrics(valid_results, test_results, choices))
    a, b = runs
    assert set(a) == {"cache", "dynamic", "dynamic+cache"}
    for method in a:
        assert {k: v for k, v in a[method].items() if k != "test"} == \
            {k: v for k, v in b[method].items() if k != "test"}, method
        assert a[method]["test"] != b[method]["test"], method
    # The choice is the grid's best on valid, whatever test held.
    _, lp, features = static_pass(model, valid)
    grid = cache_log_probs(features, valid[1:], lp, WINDOW, [0.3, 1.0])
    best = choose_cache(lp, grid, [0.3, 1.0], [0.1, 0.3], BPTT)
    assert (a["cache"]["theta"], a["cache"]["lambda"]) == (best.theta, best.lam)


@pytest.mark.parametrize("window, lr, methods", [(0, 0.0, set()), (WINDOW, 0.0, {"cache"}),
                                                  (0, LR, {"dynamic"}),
                                                  (WINDOW, LR, {"cache", "dynamic",
                                                                "dynamic+cache"})])
def test_each_method_runs_only_when_on(window, lr, methods):
    model = tiny_model()
    data = batchify(zipf_stream(60, 11), 2)
    config = EvaluateConfig(bptt=BPTT, cache_window=window, dynamic_lr=lr)
    evaluate_loss(model, data, BPTT, kept := [])
    rule = krause_rule(model, lr) if lr else None
    results, _ = adapt_valid(model, data, kept, config, rule, lambda line: None)
    assert set(results) == methods
    assert all(entry["batch"] == 2 and entry["tokens"] == data[1:].numel()
               for entry in results.values())


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("values, pattern", [
    ({"cache_thetas": []}, r"^evaluate\.cache_thetas: \[\] .*numbers > 0"),
    ({"cache_thetas": [0.5, 0]}, r"^evaluate\.cache_thetas: .*numbers > 0"),
    ({"cache_lambdas": [0.2, 1.5]}, r"^evaluate\.cache_lambdas: .*\[0, 1\]"),
    ({"cache_lambdas": ["a"]}, r"^evaluate\.cache_lambdas: "),
    ({"cache_window": -1}, r"^evaluate\.cache_window: -1 "),
    ({"dynamic_lr": -0.1}, r"^evaluate\.dynamic_lr: -0\.1 "),
    ({"dynamic_segment": 0}, r"^evaluate\.dynamic_segment: 0 "),
    ({"dynamic_epsilon": 0}, r"^evaluate\.dynamic_epsilon: 0 "),
    ({"dynamic_stat_tokens": 0}, r"^evaluate\.dynamic_stat_tokens: 0 "),
])
def test_bad_adaptation_params_name_the_key(values, pattern):
    with pytest.raises(ParamsError, match=pattern):
        parse_section("evaluate", values, EvaluateConfig)


def test_grids_are_read_as_floats():
    config = parse_section("evaluate", {"cache_thetas": [1], "cache_lambdas": [0, 1]},
                           EvaluateConfig)
    assert config.cache_thetas == [1.0] and config.cache_lambdas == [0.0, 1.0]
    assert all(isinstance(v, float) for v in config.cache_thetas + config.cache_lambdas)


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory) -> Path:
    """corpus -> tokens -> ids, and an untrained tiny checkpoint: what the stage reads."""
    root = tmp_path_factory.mktemp("adapt")
    write_tiny_corpus(root / "raw", sizes=(150, 30, 30))
    vocab, _ = tokenise_corpus(root / "raw", root / "tokens", root / "vocab.json",
                               scheme="wikitext")
    tensorise_corpus(root / "tokens", vocab, root / "ids")
    torch.manual_seed(0)
    model = LSTMLanguageModel(parse_section("model", TINY_MODEL, ModelConfig), len(vocab))
    save_checkpoint(root / "model.pt", model, vocab, {"epoch": 1})
    return root


def run_stage(root: Path, name: str, ids: str = "ids", **evaluate) -> dict:
    params = {"evaluate": {"batch_size": 4, "test_batch_size": 2, "bptt": 8, **evaluate}}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--params", f"{name}.yaml", "--ids", ids,
         "--vocab", "vocab.json", "--checkpoint", "model.pt", "--out", f"{name}.json"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads((root / f"{name}.json").read_text())


def test_stage_with_both_methods_off_writes_todays_file(tiny_project):
    """Only the static entries, with the numbers evaluate_loss gives (today's file)."""
    from lstmlm.core.loading import load

    metrics = run_stage(tiny_project, "off", cache_window=0, dynamic_lr=0.0)
    assert set(metrics) == {"valid", "test"}
    model = load(tiny_project / "model.pt", tiny_project / "vocab.json").model
    for split, batch_size in (("valid", 4), ("test", 2)):
        assert set(metrics[split]) == {"loss", "ppl", "tokens_per_s", "batch"}
        assert metrics[split]["batch"] == batch_size
        data = batchify(load_ids(tiny_project / "ids", split), batch_size)
        loss = evaluate_loss(model, data, 8)
        assert metrics[split]["loss"] == round(loss, 6)
        assert metrics[split]["ppl"] == round(math.exp(loss), 3)


def test_stage_reports_adapted_entries_beside_the_static_ones(tiny_project):
    """Defaults on: each method with valid and test, the cache's θ and λ from its grid;
    another test split changes no valid number and no choice."""
    other = tiny_project / "ids_other"
    other.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        ids = np.load(tiny_project / "ids" / f"{split}.npy")
        np.save(other / f"{split}.npy", ids[::-1].copy() if split == "test" else ids)
    grid = {"cache_thetas": [0.3, 1.0], "cache_lambdas": [0.1, 0.2], "adapt_valid_tokens": 0}
    on = run_stage(tiny_project, "on", **grid)
    off = run_stage(tiny_project, "off_too", cache_window=0, dynamic_lr=0.0)
    swapped = run_stage(tiny_project, "swapped", "ids_other", **grid)
    for split in ("valid", "test"):  # the static numbers, unchanged by the adaptation
        assert on[split]["loss"] == off[split]["loss"] and set(on[split]) == set(off[split])
    assert set(on) == {"valid", "test", "cache", "dynamic", "dynamic+cache"}
    for method in ("cache", "dynamic+cache"):
        assert set(on[method]) == {"valid", "test", "theta", "lambda"}
        assert on[method]["theta"] in grid["cache_thetas"]
        assert on[method]["lambda"] in grid["cache_lambdas"]
    assert set(on["dynamic"]) == {"valid", "test"}
    # Valid is read for the adapted figures as test is: in test_batch_size (2) columns.
    n_valid = len(load_ids(tiny_project / "ids", "valid"))
    n_test = len(load_ids(tiny_project / "ids", "test"))
    for method in ("cache", "dynamic", "dynamic+cache"):
        assert on[method]["valid"]["batch"] == on[method]["test"]["batch"] == 2
        assert on[method]["valid"]["tokens"] == (n_valid // 2 - 1) * 2
        assert on[method]["test"]["tokens"] == (n_test // 2 - 1) * 2
        assert set(on[method]["test"]) == {"loss", "ppl", "batch", "tokens"}
    for method in ("cache", "dynamic", "dynamic+cache"):
        assert {k: v for k, v in on[method].items() if k != "test"} == \
            {k: v for k, v in swapped[method].items() if k != "test"}, method


def test_adapted_figures_read_a_prefix_of_valid_and_choose_on_it(tiny_project):
    """adapt_valid_tokens: the adapted valid figures and the choices come from valid's first
    tokens only; a valid split that differs after them changes nothing."""
    other = tiny_project / "ids_tail"
    other.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        ids = np.load(tiny_project / "ids" / f"{split}.npy")
        if split == "valid":
            ids = np.concatenate([ids[:120], ids[120:][::-1]])
        np.save(other / f"{split}.npy", ids)
    settings = {"cache_thetas": [0.3, 1.0], "cache_lambdas": [0.1, 0.2], "adapt_valid_tokens": 120}
    head = run_stage(tiny_project, "head", **settings)
    tail = run_stage(tiny_project, "tail", "ids_tail", **settings)
    assert head["valid"] != tail["valid"]  # the static valid reads the whole split
    for method in ("cache", "dynamic", "dynamic+cache"):
        assert head[method]["valid"]["tokens"] == (120 // 2 - 1) * 2
        assert head[method] == tail[method], method


def test_max_tokens_reads_the_first_tokens_of_valid_and_test(tiny_project):
    """evaluate.max_tokens (a quick run): every figure, static and adapted, from the
    first tokens of each split."""
    from lstmlm.core.loading import load

    metrics = run_stage(tiny_project, "head", max_tokens=100, cache_thetas=[1.0],
                        cache_lambdas=[0.1], adapt_valid_tokens=0)
    model = load(tiny_project / "model.pt", tiny_project / "vocab.json").model
    for split, batch_size in (("valid", 4), ("test", 2)):
        head = batchify(load_ids(tiny_project / "ids", split)[:100], batch_size)
        assert metrics[split]["loss"] == round(evaluate_loss(model, head, 8), 6)
        for method in ("cache", "dynamic", "dynamic+cache"):
            assert metrics[method][split]["tokens"] == (100 // 2 - 1) * 2


def test_the_dynamic_grid_benchmark_tries_each_setting(tiny_project):
    """bench/dynamic_grid.py: one line per setting, the overrides applied and checked."""
    (tiny_project / "grid.yaml").write_text(yaml.safe_dump({"evaluate": {"bptt": 8}}))
    command = [sys.executable, str(ROOT / "bench" / "dynamic_grid.py"), "--checkpoint",
               "model.pt", "--ids", "ids", "--params", "grid.yaml", "--tokens", "40"]
    run = subprocess.run(command + ["segment=5", "segment=3,lr=0", "lr=1e-3,decay=0.5"],
                         cwd=tiny_project, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if ": ppl " in line]
    assert len(lines) == 3
    assert "segment 5" in lines[0] and "segment 3" in lines[1] and "lr 0," in lines[1]
    assert "lr 0.001" in lines[2] and "decay 0.5" in lines[2] and "segment 70" in lines[2]
    # lr 0 adapts nothing: the static perplexity of the same tokens, to the printed digits.
    from lstmlm.core.loading import load
    model = load(tiny_project / "model.pt", tiny_project / "vocab.json").model
    static = evaluate_loss(model, batchify(load_ids(tiny_project / "ids", "valid")[:40], 1), 8)
    assert float(lines[1].split(": ppl ")[1].split()[0]) == pytest.approx(math.exp(static),
                                                                          abs=0.006)
    bad = subprocess.run(command + ["segment=0"], cwd=tiny_project, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "evaluate.dynamic_segment: 0" in bad.stderr
