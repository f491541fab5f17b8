"""Evaluation-time adaptation: the neural cache and dynamic evaluation.

Both use the text already scored to predict what comes next, so their perplexities are
*adapted* numbers, reported beside the static ones (lstmlm.evaluate.perplexity), never instead of
them. Neither lets a token influence its own score: position t is scored from tokens
before t only (tests/test_adaptation.py perturbs tokens to check it).

- Neural cache pointer (Grave et al. 2017, arXiv:1612.04426). Recent words tend to come
  back. The model's features h_i (the output layer's input) of the last ``window``
  positions are kept with the word that followed each; the next word's probability is

      p(w) = (1 - λ) p_model(w) + λ p_cache(w),
      p_cache(w) ∝ Σ_{i in window, x_{i+1} = w} exp(θ h_t · h_i).

  Only p(target) is needed, never the full distribution: the features and log p_model
  (target) of a split are computed once, and every (θ, λ) of a grid is evaluated from them.
  θ and λ are chosen on valid and applied unchanged to test.

- Dynamic evaluation (Krause et al. 2018, arXiv:1709.07432). The stream is read in
  segments; each is scored first, then the weights take one step on its loss with
  Krause et al.'s RMS rule, per weight w:

      w ← w - lr ∇w / (rms_w + ε) + min(1, decay rms_w / r̄) (w_0 - w)

  rms_w is the root mean square of w's gradient over a slice of the training text
  (``gradient_rms``) and r̄ the mean of the weight tensors' mean RMS. Weights whose
  gradient is usually small take larger steps relative to it, and weights that move a
  lot in training are pulled back harder toward the trained w_0, which keeps the
  adaptation local to recent text. An untied embedding table stays frozen (its gradient
  would be a dense vocab × emb tensor every step, for words that are mostly seen once;
  tied to a full softmax, the output matrix with it). With adaptive input tied to the
  adaptive softmax (the default) every weight adapts.

Layouts are those of lstmlm.data.streams: a split is a (T, B) stream, B columns read in
parallel; row i of the targets is row i + 1 of the stream. Scores are per position:

    features   (N, B, D)   N = T - 1 scored rows, D = the model's out_dim
    targets    (N, B)      word ids
    log_probs  (N, B)      log p(target), fp32

The cache runs down each column separately (one cache per column).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from lstmlm.core.progress import Reporter
from lstmlm.data.streams import batchify, get_batch
from lstmlm.evaluate.config import EvaluateConfig
from lstmlm.evaluate.perplexity import metric_entry, perplexity
from lstmlm.model.lstm import LSTMLanguageModel, detach_state

# Elements of one block of window scores, (B, rows, window): about 16 MB of fp32 each.
BLOCK_ELEMENTS = 1 << 22
BLOCK_ROWS = 256

# What reports progress: (what, tokens in all) -> a Reporter (lstmlm.core.progress).
Progress = Callable[[str, int], Reporter]
# A long loop's callback: this many more tokens are done.
Tick = Callable[[int], None]


# --------------------------------------------------------------------------- losses


def stream_loss(log_probs: torch.Tensor, rows: int) -> float:
    """Mean loss (nats per token) of (N, B) log-probs, summed as evaluate_loss sums it (an
    fp32 mean per ``rows`` rows, weighted in fp64): with the static log-probs and the
    evaluation bptt, the static loss to the last bit."""
    total = torch.zeros((), dtype=torch.float64, device=log_probs.device)
    for i in range(0, log_probs.size(0), rows):
        chunk = log_probs[i:i + rows]
        total += (-chunk).mean().double() * chunk.numel()
    return float(total) / log_probs.numel()


def mix(model_lp: torch.Tensor, cache_lp: torch.Tensor, lam: float) -> torch.Tensor:
    """log((1 - λ) p_model + λ p_cache), elementwise, in log space (p_cache is often 0)."""
    if lam == 0.0:
        return model_lp
    return torch.logaddexp(model_lp + math.log1p(-lam), cache_lp + math.log(lam))


# --------------------------------------------------------------------------- neural cache


def _window_scores(h: torch.Tensor, start: int, rows: int, window: int) -> torch.Tensor:
    """θ-free scores of rows [start, start + rows) against the ``window`` positions before
    each: h_t · h_i - max_i h_t · h_i, (B, rows, window), -inf at the padding.

    h (B, window + N, D) holds each column's features after ``window`` padding rows (the
    padded row of row t is t + window; its window is padded rows [t, t + window)).
    """
    queries = h[:, window + start:window + start + rows]          # (B, rows, D)
    keys = h[:, start:start + rows + window - 1]                  # (B, rows + window - 1, D)
    full = torch.bmm(queries, keys.transpose(1, 2))               # (B, rows, rows + window - 1)
    # Query k's window is key columns [k, k + window): a diagonal band, read as a strided
    # view (each row starts one column further on) instead of being copied out.
    s0, s1, _ = full.stride()
    band = full.as_strided((full.size(0), rows, window), (s0, s1 + 1, 1))
    if start < window:  # the first rows' windows reach into the padding: no cache there
        k = torch.arange(rows, device=h.device).unsqueeze(1)
        i = torch.arange(window, device=h.device).unsqueeze(0)
        band.masked_fill_((start + k + i < window).unsqueeze(0), -math.inf)
    top = band.amax(-1, keepdim=True).nan_to_num_(neginf=0.0)    # all -inf: an empty cache
    return band - top                                             # <= 0: exp never overflows


def _window_hits(y: torch.Tensor, start: int, rows: int,
                 window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where in each window the next word is the target: flat indices into (B, rows, window)
    and their row (b * rows + k). Sparse: a word recurs in a few % of the window."""
    followers = y[:, start:start + rows + window - 1].unfold(1, window, 1)  # (B, rows, window)
    matches = followers == y[:, window + start:window + start + rows].unsqueeze(-1)
    col, k, i = matches.nonzero().unbind(1)
    row = col * rows + k
    return row * window + i, row


@torch.no_grad()
def cache_log_probs(features: torch.Tensor, targets: torch.Tensor, model_lp: torch.Tensor,
                    window: int, thetas: list[float], tick: Tick | None = None) -> torch.Tensor:
    """log p_cache(target) for each θ: (len(thetas), N, B) from features (N, B, D),
    targets (N, B). Where the cache is empty (the first row) it is log p_model, so any
    mixture there is the model alone. ``tick(tokens)`` follows each block of rows.

    Blocks of rows keep memory flat; per block the dot products are computed once and
    every θ reuses them: p_cache = Σ_hits exp(θ s) / Σ_window exp(θ s).
    """
    n, b, _ = features.shape
    window = min(window, n)  # a window longer than the stream holds all of it
    if window == 0:  # no cache: the model alone
        return model_lp.expand(len(thetas), n, b).clone()
    h = torch.nn.functional.pad(features.transpose(0, 1).float(), (0, 0, window, 0))
    y = torch.nn.functional.pad(targets.t(), (window, 0), value=-1)  # -1 matches no word
    out = model_lp.new_empty(len(thetas), n, b)
    # Each block's matrix product also scores rows - 1 keys outside any window: few rows
    # for a long window (valid's 10 columns: ~100), at most BLOCK_ROWS.
    block = max(1, min(n, BLOCK_ROWS, BLOCK_ELEMENTS // (b * window)))
    for start in range(0, n, block):
        rows = min(block, n - start)
        scores = _window_scores(h, start, rows, window)             # (B, rows, window)
        flat, hit_rows = _window_hits(y, start, rows, window)
        hit_scores = scores.view(-1)[flat]
        fallback = model_lp[start:start + rows].t().reshape(-1)     # (B * rows,)
        for j, theta in enumerate(thetas):
            total = torch.mul(scores, theta).exp_().sum(-1).view(-1)  # 0 at the padding
            hits = total.new_zeros(total.shape).index_add_(0, hit_rows,
                                                           hit_scores.mul(theta).exp_())
            lp = torch.where(total > 0, hits.log() - total.log(), fallback)
            out[j, start:start + rows] = lp.view(b, rows).t()
        if tick is not None:
            tick(rows * b)
    return out


@dataclass(frozen=True)
class CacheChoice:
    """The (θ, λ) picked on valid, with valid's loss and the whole grid (for the log)."""

    theta: float
    lam: float
    loss: float
    grid: dict[tuple[float, float], float]


def choose_cache(model_lp: torch.Tensor, cache_lp: torch.Tensor, thetas: list[float],
                 lambdas: list[float], rows: int) -> CacheChoice:
    """The (θ, λ) of the grid with the lowest loss; valid's log-probs only go in here."""
    grid = {(theta, lam): stream_loss(mix(model_lp, cache_lp[j], lam), rows)
            for j, theta in enumerate(thetas) for lam in lambdas}
    theta, lam = min(grid, key=grid.get)
    return CacheChoice(theta, lam, grid[theta, lam], grid)


# --------------------------------------------------------------------------- dynamic evaluation


# Krause et al.'s batch for the gradient statistics: B = 100 training streams.
STAT_STREAMS = 100


def adapted_weights(model: LSTMLanguageModel) -> list[torch.nn.Parameter]:
    """The weights dynamic evaluation changes: all but an untied embedding table."""
    return [p for name, p in model.named_parameters() if not name.startswith("encoder.")]


def _segment_gradients(model: LSTMLanguageModel, data: torch.Tensor, segment: int,
                       params: list[torch.Tensor]) -> Iterator[tuple]:
    """Read a (T, B) stream in segments of ``segment`` rows, state carried; for each yield
    (log p(target) (rows, B), features (rows, B, D), the gradients of the segment's mean
    loss for ``params``; None for a weight it did not use). Each segment is computed only
    when asked for, so a caller that changes ``params`` between yields has the next one
    read by the changed weights (dynamic evaluation: scored first, then learnt from)."""
    state = model.init_state(data.size(1))
    for i in range(0, data.size(0) - 1, segment):
        inputs, targets = get_batch(data, i, min(segment, data.size(0) - 1 - i),
                                    params[0].device)
        with torch.enable_grad():
            out = model(inputs, state)
            lp = model.target_log_probs(out.features, targets)
        grads = torch.autograd.grad(-lp.mean(), params, allow_unused=True)
        state = detach_state(out.state)
        yield lp.detach(), out.features.detach(), grads


def gradient_rms(model: LSTMLanguageModel, train: torch.Tensor, segment: int,
                 batches: int) -> list[torch.Tensor]:
    """RMS of each adapted weight's gradient (same shapes as ``adapted_weights``) over
    ``batches`` training batches of ``segment`` rows of a (T, B) stream, state carried,
    dropout off: the per-weight scale of dynamic evaluation's step."""
    model.eval()
    params = adapted_weights(model)
    squares = [torch.zeros_like(p) for p in params]
    count = 0
    for _, _, grads in itertools.islice(_segment_gradients(model, train, segment, params),
                                        batches):
        for square, g in zip(squares, grads):
            if g is not None:
                square.addcmul_(g, g)
        count += 1
    return [square.div_(count).sqrt_() for square in squares]


@dataclass
class DynamicRule:
    """Krause et al.'s update as two per-weight factors (see the module docstring):
    ``steps`` = lr / (rms + ε), ``pulls`` = min(1, decay rms / r̄); ``stat_tokens``: how
    many training tokens the RMS was measured on (for the log)."""

    steps: list[torch.Tensor]
    pulls: list[torch.Tensor]
    stat_tokens: int = 0

    @classmethod
    def from_rms(cls, rms: list[torch.Tensor], lr: float, decay: float, epsilon: float,
                 stat_tokens: int = 0) -> "DynamicRule":
        mean = torch.stack([r.mean() for r in rms]).mean()
        return cls(steps=[lr / (r + epsilon) for r in rms],
                   pulls=[(r * (decay / mean)).clamp_(max=1.0) for r in rms],
                   stat_tokens=stat_tokens)

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads, trained: list[torch.Tensor]) -> None:
        """One update of ``params`` in place, from the gradients of a segment's loss."""
        torch._foreach_lerp_(params, trained, self.pulls)  # w + pull (w_0 - w)
        used = [k for k, g in enumerate(grads) if g is not None]  # None: an unused cluster
        torch._foreach_addcmul_([params[k] for k in used], [grads[k] for k in used],
                                [self.steps[k] for k in used], value=-1.0)


def dynamic_log_probs(model: LSTMLanguageModel, data: torch.Tensor, rule: DynamicRule,
                      segment: int, keep_features: bool = False, tick: Tick | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass of dynamic evaluation over a (T, B) stream: log p(target) (N, B) and, with
    ``keep_features``, the features (N, B, D) for a cache on top. The model is not
    changed (a copy adapts); the hidden state is carried across segments. ``tick(tokens)``
    follows each segment."""
    model = copy.deepcopy(model).eval()
    params = adapted_weights(model)
    trained = [p.detach().clone() for p in params]
    scores, features = [], []
    for lp, segment_features, grads in _segment_gradients(model, data, segment, params):
        scores.append(lp)                       # scored first ...
        if keep_features:
            features.append(segment_features)
        rule.step(params, grads, trained)       # ... then learnt
        if tick is not None:
            tick(lp.numel())
    return torch.cat(scores), torch.cat(features) if keep_features else None


def dynamic_rule(model: LSTMLanguageModel, train_ids, config: EvaluateConfig) -> DynamicRule:
    """The rule of config's dynamic_* keys, its RMS from the start of the training ids:
    as many whole batches of 100 streams × dynamic_segment as dynamic_stat_tokens holds
    (at least one; fewer streams for a short training split)."""
    segment = config.dynamic_segment
    streams = max(1, min(STAT_STREAMS, len(train_ids) // (segment + 1)))
    batches = max(1, config.dynamic_stat_tokens // (streams * segment))
    rows = min(len(train_ids) // streams, batches * segment + 1)
    train = batchify(train_ids[:rows * streams], streams)
    rms = gradient_rms(model, train, segment, batches)
    tokens = min(batches * segment, rows - 1) * streams  # the targets that were scored
    return DynamicRule.from_rms(rms, config.dynamic_lr, config.dynamic_decay,
                                config.dynamic_epsilon, tokens)


# --------------------------------------------------------------------------- valid, then test
# The order is the method: every choice (each cache's θ and λ) is made on valid by
# adapt_valid, which returns it, and adapt_test applies it unchanged to test. Both read
# their split the same way (the stage passes test's batch size for both), so the choice is
# made on the kind of stream it is applied to.

CacheScorer = Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor], float]


def adapt_valid(model: LSTMLanguageModel, data: torch.Tensor, kept: list | None,
                config: EvaluateConfig, rule: DynamicRule | None = None,
                log: Callable[[str], None] = print,
                progress: Progress = Reporter) -> tuple[dict, dict[str, CacheChoice]]:
    """Every enabled method on valid, each cache's (θ, λ) chosen from the grid here:
    returns ({method: entry}, {method: CacheChoice}); adapt_test takes the choices.
    ``progress`` reports the long parts as they go."""
    choices: dict[str, CacheChoice] = {}
    progress = _on_split(progress, "valid")

    def choose(name, model_lp, features, targets) -> float:
        with progress(f"{name} grid", targets.numel()) as report:
            cache_lp = cache_log_probs(features, targets, model_lp, config.cache_window,
                                       config.cache_thetas, report.advance)
        choices[name] = choose_cache(model_lp, cache_lp, config.cache_thetas,
                                     config.cache_lambdas, config.bptt)
        _log_grid(name, choices[name], config, log)
        return choices[name].loss

    return _adapt(model, data, kept, config, rule, choose, log, progress), choices


def adapt_test(model: LSTMLanguageModel, data: torch.Tensor, kept: list | None,
               config: EvaluateConfig, rule: DynamicRule | None,
               choices: dict[str, CacheChoice], log: Callable[[str], None] = print,
               progress: Progress = Reporter) -> dict:
    """Every enabled method on test, with valid's choices (adapt_valid) applied unchanged."""
    progress = _on_split(progress, "test")

    def apply(name, model_lp, features, targets) -> float:
        pick = choices[name]
        with progress(name, targets.numel()) as report:
            cache_lp = cache_log_probs(features, targets, model_lp, config.cache_window,
                                       [pick.theta], report.advance)[0]
        return stream_loss(mix(model_lp, cache_lp, pick.lam), config.bptt)

    return _adapt(model, data, kept, config, rule, apply, log, progress)


def _on_split(progress: Progress, split: str) -> Progress:
    """Reports named "evaluate METHOD on SPLIT"."""
    return lambda what, total: progress(f"evaluate {what} on {split}", total)


def _adapt(model: LSTMLanguageModel, data: torch.Tensor, kept: list | None,
           config: EvaluateConfig, rule: DynamicRule | None, cache: CacheScorer,
           log: Callable[[str], None], progress: Progress) -> dict[str, dict]:
    """{"cache": e, "dynamic": e, "dynamic+cache": e} on one (T, B) split, each e =
    {loss, ppl, batch, tokens}; ``cache(name, model log-probs, features, targets)`` gives
    the loss of a cache on top of a method's scores (chosen or applied, see above).

    ``kept`` holds the static pass's (features (T, B, D), log p(target) (T, B)) per batch
    (evaluate_loss's ``keep``; the cache needs it, and empties it to free the memory).
    ``rule`` (``dynamic_rule``) is needed when config.dynamic_lr is not 0.
    """
    results, timed = {}, _timer(log)
    targets = data[1:]
    read = {"batch": data.size(1), "tokens": targets.numel()}
    if config.cache_window:
        features, static_lp = (torch.cat(parts) for parts in zip(*kept))
        kept.clear()
        loss = cache("cache", static_lp, features, targets.to(features.device))
        results["cache"] = {**metric_entry(loss), **read}
        del features, static_lp
        timed("cache")
    if config.dynamic_lr:
        with progress("dynamic", targets.numel()) as report:
            lp, features = dynamic_log_probs(model, data, rule, config.dynamic_segment,
                                             bool(config.cache_window), report.advance)
        results["dynamic"] = {**metric_entry(stream_loss(lp, config.bptt)), **read}
        timed("dynamic")
        if config.cache_window:
            loss = cache("dynamic+cache", lp, features, targets.to(lp.device))
            results["dynamic+cache"] = {**metric_entry(loss), **read}
            timed("dynamic+cache")
    return results


def _log_grid(name: str, pick: CacheChoice, config: EvaluateConfig,
              log: Callable[[str], None]) -> None:
    """The valid grid as a table: a row per θ, a column per λ."""
    log(f"{name} grid on valid, ppl (lambda " + " ".join(f"{x:g}" for x in config.cache_lambdas)
        + "):")
    for theta in config.cache_thetas:
        row = " ".join(f"{perplexity(pick.grid[theta, lam]):.2f}" for lam in config.cache_lambdas)
        log(f"  theta {theta:g}: {row}")
    log(f"{name}: chose theta {pick.theta:g}, lambda {pick.lam:g} (valid ppl "
        f"{perplexity(pick.loss):.2f})")


def _timer(log: Callable[[str], None]) -> Callable[[str], None]:
    """``timed(what)`` logs the seconds since the previous call."""
    last = [time.perf_counter()]

    def timed(what: str) -> None:
        now = time.perf_counter()
        log(f"{what}: {now - last[0]:.1f} s")
        last[0] = now
    return timed


def adapted_metrics(valid: dict[str, dict], test: dict[str, dict],
                    choices: dict[str, CacheChoice]) -> dict:
    """adapt_valid's and adapt_test's results and valid's choices -> metrics/eval.json's
    adapted entries: {method: {"valid": entry, "test": entry, "theta": θ, "lambda": λ}}."""
    out = {method: {"valid": entry, "test": test[method]} for method, entry in valid.items()}
    for method, pick in choices.items():
        out[method].update({"theta": pick.theta, "lambda": pick.lam})
    return out
