"""Text generation from a prompt, usable without DVC:

    generator, payload = load_generator("data/model.pt")
    print(generator.generate("The Beatles are", SamplingOptions(words=50)).text)

(``Generator(model, vocab)`` works as well with a model from ``checkpoint.load_model``.)

The whole prompt primes the hidden state (after an ``<eos>``, as if it began a line),
tokenised with the scheme the model was trained with; then words are drawn one at a
time: temperature (0 = greedy), top-k, top-p, optionally never ``<unk>``.

Speed (CPU, one stream): per word the generator runs one LSTM step and the output layer,
nothing else. The step uses fused weights (one matrix product per layer) instead of
``nn.LSTM``, whose oneDNN path costs several times more for a single time step. With an
adaptive softmax at temperature 1 and no top-k/top-p, a word is drawn from the head and,
only when a tail cluster is drawn, from that cluster: the full distribution is never
computed, yet the draw follows it exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_vocab_for, model_from_payload, read_checkpoint
from .errors import LstmlmError
from .params import check_fields, spec
from .model import LSTMLanguageModel, State
from .text import EOS, SCHEMES, detokenise, tokenise_prompt
from .vocab import Vocabulary

# The prompt primes the state this many tokens at a time, so a huge prompt (100 KB of text
# is ~20k tokens) needs memory for one chunk's activations, not for the whole prompt.
PRIME_CHUNK = 512

# Rejection rounds for banned words inside an adaptive softmax's tail clusters before
# falling back to the full distribution (see sample_adaptive).
_MAX_REJECTIONS = 8


@dataclass(frozen=True)
class SamplingOptions:
    """How to draw words; the sample stage's params use the same names.

    ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 disable those filters;
    ``seed`` None draws a fresh seed; ``allow_unk`` False never emits ``<unk>``;
    ``stop_at_eos`` ends the text at the first ``<eos>`` (which is still returned).
    """

    words: int = spec(40, low=1)
    temperature: float = spec(0.8, low=0.0, doc="0 is greedy")
    top_k: int = spec(0, low=0, doc="0 disables")
    top_p: float = spec(0.95, low=0.0, high=1.0, low_open=True, doc="1 disables")
    seed: int | None = spec(0, low=0, high=2**63 - 1, doc="none draws a fresh seed")
    allow_unk: bool = spec(False)
    stop_at_eos: bool = spec(False)

    def __post_init__(self) -> None:
        check_fields(self, "sample")

    @property
    def plain(self) -> bool:
        """True when words are drawn from the model's own distribution, unfiltered."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0


@dataclass
class Generation:
    """A prompt's continuation: raw tokens, readable text, and the prompt's unknown words."""

    prompt: str
    tokens: list[str]
    unknown_words: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The tokens detokenised for reading (``<eos>`` becomes a line break)."""
        return detokenise(self.tokens)


class Generator:
    """Draws words from a trained model; keeps no state between calls.

    The model must not be trained while a stream is being drawn: a stream copies the
    LSTM weights into fused matrices when it starts.
    """

    def __init__(self, model: LSTMLanguageModel, vocab: Vocabulary):
        if model.vocab_size != len(vocab):
            raise LstmlmError(f"the model has {model.vocab_size} output words but the "
                              f"vocabulary has {len(vocab)}: they do not belong together")
        if vocab.scheme not in SCHEMES:
            raise LstmlmError(f"the vocabulary's tokenisation scheme {vocab.scheme!r} is unknown; "
                              f"expected one of {', '.join(SCHEMES)}")
        self.model = model.eval()
        self.vocab = vocab
        self.device = next(model.parameters()).device

    # ------------------------------------------------------------------ prompt

    def encode_prompt(self, prompt: str) -> tuple[list[int], list[str]]:
        """Prompt -> ids (after a leading ``<eos>``) and the distinct words not in the
        vocabulary (read as ``<unk>``), in order of appearance."""
        tokens = tokenise_prompt(prompt, self.vocab.scheme)
        index = self.vocab.index
        unknown = list(dict.fromkeys(t for t in tokens if t not in index))
        return [self.vocab.eos_id] + self.vocab.encode(tokens), unknown

    @torch.inference_mode()
    def prime(self, ids: Sequence[int]) -> tuple[torch.Tensor, State]:
        """Run the model over ids (in chunks of PRIME_CHUNK): features (1, D) after the
        last id, and the state."""
        if not ids:
            raise ValueError("prime() needs at least one id")
        state = None
        for start in range(0, len(ids), PRIME_CHUNK):
            chunk = torch.tensor(ids[start:start + PRIME_CHUNK], dtype=torch.long,
                                 device=self.device).view(-1, 1)  # (T, 1)
            features, state = self.model(chunk, state)[:2]
        return features[-1], state

    # ------------------------------------------------------------------ generation

    def stream(self, prompt: str, options: SamplingOptions) -> Iterator[str]:
        """Yield generated tokens one by one (``<eos>`` included)."""
        ids, _ = self.encode_prompt(prompt)
        return self.stream_ids(ids, options)

    @torch.inference_mode()  # the decorator (unlike a `with` inside) is generator-safe
    def stream_ids(self, ids: Sequence[int], options: SamplingOptions) -> Iterator[str]:
        """Yield tokens generated after prompt ids (as from encode_prompt)."""
        # random.Random(None) seeds itself from the OS; a seed reproduces the output on the
        # same model, whatever else the program draws (no global RNG is used).
        rng = random.Random(options.seed)
        banned = self._banned(options)
        words, eos_id = self.vocab.words, self.vocab.eos_id
        features, state = self.prime(ids)
        stepper = _Stepper(self.model, state)
        for n in range(options.words):
            next_id = self._next_token(features, options, rng, banned)
            yield words[next_id]
            if options.stop_at_eos and next_id == eos_id:
                return
            if n + 1 < options.words:  # the last word needs no step after it
                features = stepper.step(next_id)

    def generate(self, prompt: str, options: SamplingOptions) -> Generation:
        """Generate ``options.words`` tokens after the prompt (fewer if stopped at ``<eos>``)."""
        ids, unknown = self.encode_prompt(prompt)
        return Generation(prompt, list(self.stream_ids(ids, options)), unknown)

    # ------------------------------------------------------------------ one draw

    def _banned(self, options: SamplingOptions) -> list[int]:
        return [] if options.allow_unk else [self.vocab.unk_id]

    @torch.inference_mode()
    def next_token(self, h: torch.Tensor, options: SamplingOptions, rng: random.Random,
                   banned: list[int] | None = None) -> int:
        """Draw the next id given features h (1, D); ``banned`` defaults to what the
        options ban (``<unk>`` unless allowed)."""
        return self._next_token(h, options, rng,
                                self._banned(options) if banned is None else banned)

    def _next_token(self, h: torch.Tensor, options: SamplingOptions, rng: random.Random,
                    banned: list[int]) -> int:
        decoder = self.model.decoder
        adaptive = isinstance(decoder, nn.AdaptiveLogSoftmaxWithLoss)
        if options.temperature == 0 and adaptive:
            return greedy_adaptive(decoder, h, banned)
        if options.plain and adaptive:
            return sample_adaptive(decoder, h, banned, rng)
        log_probs = self.model.log_probs(h)[0]  # (V,)
        return sample_from_log_probs(log_probs, options, banned, rng)


# ---------------------------------------------------------------------- loading


def load_generator(checkpoint: str | Path, vocab_path: str | Path | None = None,
                   map_location: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """A Generator for a checkpoint, and the checkpoint's payload.

    The vocabulary is ``vocab_path`` or else the one the checkpoint refers to (looked
    for at its stored path, then beside the checkpoint); either way it must be the one
    the model was trained with (checked by hash). Raises CheckpointError / VocabError.
    """
    path = Path(checkpoint)
    payload = read_checkpoint(path, map_location)
    stored = Path(payload["vocab"]["path"])  # read_checkpoint checked the reference is there
    if vocab_path is None:
        # The stored path is relative to where training ran (the repository root); a
        # checkpoint copied elsewhere usually travels with its vocabulary beside it.
        beside = path.parent / stored.name
        vocab_path = beside if not stored.is_file() and beside.is_file() else stored
    vocab = load_vocab_for(payload, vocab_path)  # before the model: fail fast on a mismatch
    return Generator(model_from_payload(payload, path).to(map_location), vocab), payload


# ---------------------------------------------------------------------- one LSTM step


class _Stepper:
    """One time step of the model's LSTMs for a single stream, from a given state.

    ``nn.LSTM`` on CPU goes through oneDNN, whose per-call setup costs several times the
    arithmetic of one step. Here each layer's input and hidden weights are concatenated
    into one (in + hidden, 4 hidden) matrix, so a step is one ``addmm`` per layer plus
    the gate nonlinearities, working in preallocated buffers. Eval mode only: no dropout.
    """

    def __init__(self, model: LSTMLanguageModel, state: State):
        self.embedding = model.encoder.weight
        self.projection = model.projection
        self.hidden = model.config.hidden
        self.layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for lstm, (h, c) in zip(model.lstms, state):
            weight = torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], 1).t().contiguous()
            bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).unsqueeze(0)  # (1, 4H)
            n_in = lstm.input_size
            # xh holds [input, h] side by side: the step writes the new h straight into it.
            xh = h.new_empty(1, n_in + self.hidden)
            xh[:, n_in:] = h.reshape(1, -1)
            self.layers.append((weight, bias, xh, c.reshape(1, -1).clone()))

    def step(self, token_id: int) -> torch.Tensor:
        """Feed one token; return the features (1, D) for predicting the next one."""
        x = self.embedding[token_id]
        h = None
        for weight, bias, xh, c in self.layers:
            n_in = xh.size(1) - self.hidden
            xh[0, :n_in] = x
            gates = torch.addmm(bias, xh, weight)  # (1, 4H), PyTorch's gate order i, f, g, o
            i, f, g, o = gates.chunk(4, 1)
            c.mul_(f.sigmoid_()).addcmul_(i.sigmoid_(), g.tanh_())
            h = xh[:, n_in:]
            torch.mul(o.sigmoid_(), c.tanh(), out=h)
            x = h[0]
        out = h.clone()  # h is a buffer the next step overwrites
        return self.projection(out) if self.projection is not None else out


# ---------------------------------------------------------------------- drawing


def _draw(probs: torch.Tensor, rng: random.Random) -> int:
    """Index drawn from non-negative weights (V,) (they need not sum to 1).

    Inverse CDF with one uniform from ``rng``: far cheaper than torch.multinomial on a
    large vocabulary. The CDF is float64 so that rare words are not rounded away; with
    ``right=True`` a zero-weight word can never be chosen.
    """
    cdf = probs.double().cumsum(0)
    total = float(cdf[-1])
    if not total > 0:
        raise LstmlmError("no word is left to draw from: every word is banned or filtered, "
                          "or the model's weights are not finite")
    index = int(torch.searchsorted(cdf, rng.random() * total, right=True))
    if index >= cdf.numel():  # u * total rounded up to total: take the last possible word
        index = int(torch.nonzero(probs > 0).max())
    return index


# Top-p draws from the full distribution until one lands in the nucleus; after this many
# misses (only likely with a tiny top_p) it sorts the vocabulary instead.
_NUCLEUS_TRIES = 8


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
    for _ in range(_NUCLEUS_TRIES):
        word = _draw(probs, rng)
        if in_nucleus(probs, word, target):
            return word
    ordered = torch.sort(probs, descending=True).values
    last = int(torch.searchsorted(ordered.double().cumsum(0), target))
    border = ordered[min(last, ordered.numel() - 1)]
    return _draw(probs.masked_fill(probs < border, 0.0), rng)


def sample_from_log_probs(log_probs: torch.Tensor, options: SamplingOptions,
                          banned: list[int], rng: random.Random) -> int:
    """Temperature, top-k and top-p sampling from a full log-distribution (V,).

    The filters apply in that order: top-k and top-p see the tempered distribution.
    """
    logits = log_probs.float()
    if banned:
        logits = logits.clone()
        logits[banned] = -math.inf
    if options.temperature == 0:
        return int(logits.argmax())
    if options.temperature != 1.0:
        logits = logits / options.temperature
    if 0 < options.top_k < logits.numel():
        kth = torch.topk(logits, options.top_k, sorted=False).values.min()
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = logits.softmax(-1)
    if options.top_p < 1.0:
        return draw_nucleus(probs, options.top_p, rng)
    return _draw(probs, rng)


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
    for _ in range(_MAX_REJECTIONS):
        choice = _draw(head_probs, rng)
        if choice < shortlist:
            return choice
        cluster = choice - shortlist
        if cluster not in tails:
            tails[cluster] = F.softmax(decoder.tail[cluster](h)[0].float(), -1)
        word = decoder.cutoffs[cluster] + _draw(tails[cluster], rng)
        if word not in banned_set:
            return word
    probs = decoder.log_prob(h)[0].float().exp()
    probs[list(banned_set)] = 0.0
    return _draw(probs, rng)


def greedy_adaptive(decoder: nn.AdaptiveLogSoftmaxWithLoss, h: torch.Tensor,
                    banned: Sequence[int]) -> int:
    """The most likely word (lowest id on ties) of an adaptive softmax, skipping every
    tail cluster that cannot beat the best head word: a tail word's log-probability is
    at most its cluster's head log-probability."""
    shortlist = decoder.shortlist_size
    head = F.log_softmax(decoder.head(h)[0].float(), -1)
    scores = head[:shortlist].clone()
    for b in banned:
        if b < shortlist:
            scores[b] = -math.inf
    best = int(scores.argmax())
    best_score = float(scores[best])
    for cluster in range(decoder.n_clusters):
        cluster_lp = float(head[shortlist + cluster])
        if not cluster_lp > best_score:
            continue
        # The same sum as AdaptiveLogSoftmaxWithLoss.log_prob, so the same argmax.
        tail = F.log_softmax(decoder.tail[cluster](h)[0].float(), -1) + head[shortlist + cluster]
        start = decoder.cutoffs[cluster]
        for b in banned:
            if start <= b < decoder.cutoffs[cluster + 1]:
                tail[b - start] = -math.inf
        within = int(tail.argmax())
        if float(tail[within]) > best_score:
            best, best_score = start + within, float(tail[within])
    if best_score == -math.inf:
        raise LstmlmError("no word is left to draw from (every word is banned)")
    return best


# ---------------------------------------------------------------------- reading


# text.detokenise's rules, token by token: a token in _CLOSING loses the space before
# it, a token ending in _OPENING the space after it, and " @-@ " (and @,@ @.@) joins
# its neighbours.
_CLOSING = frozenset([".", ",", ";", ":", "!", "?", ")", "]", "}", "'", "%",
                      "'s", "n't", "'re", "'ve", "'ll", "'d", "'m"])
_OPENING = ("(", "[", "{", "$")
_AT = {"@-@": "-", "@,@": ",", "@.@": "."}


def join_prompt(prompt: str, first_token: str | None) -> str:
    """The separator between an echoed prompt and the detokenised text that follows it."""
    if (not prompt or first_token is None or prompt[-1].isspace() or first_token == EOS
            or first_token in _CLOSING or prompt.endswith(_OPENING)):
        return ""
    return " "


class StreamDetokeniser:
    """text.detokenise, one token at a time, for printing words as they come.

    ``"".join(d.push(t) for t in tokens) + d.finish() == detokenise(tokens)``. A few
    tokens are held back until the next one shows how they join: "@-@" joins its
    neighbours only if one follows on the same line, and punctuation keeps its space
    when an "@-@" joined to it follows.
    """

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._index = 0          # position in the line of the first pending token
        self._previous = ""      # the last token written on this line
        self._previous_joined = False  # whether it was an @-@ joining its neighbours

    def push(self, token: str) -> str:
        """Add a token; return the text that can be written now."""
        if token == EOS:
            return self._flush(final=True) + "\n" + self._new_line()
        self._pending.append(token)
        return self._flush(final=False)

    def finish(self) -> str:
        """The text still held back at the end of the stream."""
        return self._flush(final=True)

    def _new_line(self) -> str:
        self._index, self._previous, self._previous_joined = 0, "", False
        return ""

    def _joins(self, k: int, previous_joined: bool, final: bool) -> bool | None:
        """Whether pending[k] is an @-@ that joins its neighbours (None: not known yet)."""
        index = self._index + k
        if self._pending[k] not in _AT or index == 0 or previous_joined:
            return False
        if k + 1 < len(self._pending):
            return True
        return False if final else None

    def _flush(self, final: bool) -> str:
        out = []
        while self._pending:
            token = self._pending[0]
            joined = self._joins(0, self._previous_joined, final)
            if joined is None:
                break
            next_joined = False
            if len(self._pending) > 1:
                next_joined = self._joins(1, joined, final)
                if next_joined is None and token in _CLOSING:
                    break
            elif not final and token in _CLOSING and self._index > 0:
                break  # an @-@ next would take the space before this punctuation back
            if self._index > 0:
                glue = (self._previous_joined or joined
                        or (token in _CLOSING and not next_joined)
                        or (not self._previous_joined and self._previous.endswith(_OPENING)))
                if not glue:
                    out.append(" ")
            out.append(_AT[token] if joined else token)
            self._previous, self._previous_joined = token, joined
            self._pending.pop(0)
            self._index += 1
        return "".join(out)
