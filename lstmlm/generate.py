"""Text generation from a prompt, usable without DVC:

    model, payload = load_model("data/model.pt")
    generator = Generator(model, load_vocab_for(payload))
    print(generator.generate("The Beatles are", SamplingOptions(words=50)).text)

The whole prompt primes the hidden state (after an ``<eos>``, as if it began a line),
then words are drawn one at a time: temperature (0 = greedy), top-k, top-p.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LstmlmError
from .model import LSTMLanguageModel
from .text import EOS, UNK, detokenise, tokenise_prompt
from .vocab import Vocabulary


@dataclass(frozen=True)
class SamplingOptions:
    """How to draw words; the sample stage's params use the same names."""

    words: int = 50
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    allow_unk: bool = False
    stop_at_eos: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.words, int) or self.words <= 0:
            raise LstmlmError(f"words: {self.words!r} is not allowed; expected an integer > 0")
        if not self.temperature >= 0:
            raise LstmlmError(f"temperature: {self.temperature!r} is not allowed; expected a "
                              "number >= 0 (0 means greedy)")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise LstmlmError(f"top_k: {self.top_k!r} is not allowed; expected an integer >= 0 "
                              "(0 disables)")
        if not 0 < self.top_p <= 1:
            raise LstmlmError(f"top_p: {self.top_p!r} is not allowed; expected a number in (0, 1]")


@dataclass
class Generation:
    """A prompt's continuation: raw tokens, readable text, and the prompt's unknown words."""

    prompt: str
    tokens: list[str]
    unknown_words: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return detokenise(self.tokens)


class Generator:
    """Draws words from a trained model; keeps no state between calls."""

    def __init__(self, model: LSTMLanguageModel, vocab: Vocabulary):
        if model.config.vocab_size != len(vocab):
            raise LstmlmError(f"the model has {model.config.vocab_size} output words but the "
                              f"vocabulary has {len(vocab)}: they do not belong together")
        self.model = model.eval()
        self.vocab = vocab
        self.device = next(model.parameters()).device

    def encode_prompt(self, prompt: str) -> tuple[list[int], list[str]]:
        """Prompt -> ids (after a leading ``<eos>``) and the words not in the vocabulary."""
        tokens = tokenise_prompt(prompt, self.vocab.scheme)
        unknown = [t for t in tokens if t not in self.vocab.index and t != UNK]
        return [self.vocab.eos_id] + self.vocab.encode(tokens), unknown

    @torch.no_grad()
    def stream(self, prompt: str, options: SamplingOptions) -> Iterator[str]:
        """Yield generated tokens one by one (``<eos>`` included)."""
        ids, _ = self.encode_prompt(prompt)
        rng = torch.Generator(device="cpu")
        rng.manual_seed(options.seed if options.seed is not None else torch.seed())
        inputs = torch.tensor(ids, dtype=torch.long, device=self.device).view(-1, 1)  # (T, 1)
        features, state = self.model(inputs)
        h = features[-1]  # (1, D): the features after the prompt's last word
        for _ in range(options.words):
            next_id = self.next_token(h, options, rng)
            token = self.vocab.words[next_id]
            yield token
            if options.stop_at_eos and token == EOS:
                return
            features, state = self.model(torch.tensor([[next_id]], device=self.device), state)
            h = features[-1]

    def generate(self, prompt: str, options: SamplingOptions) -> Generation:
        """Generate ``options.words`` tokens after the prompt."""
        _, unknown = self.encode_prompt(prompt)
        return Generation(prompt, list(self.stream(prompt, options)), unknown)

    # ------------------------------------------------------------------ one draw

    def _banned(self, options: SamplingOptions) -> list[int]:
        return [] if options.allow_unk else [self.vocab.unk_id]

    def next_token(self, h: torch.Tensor, options: SamplingOptions,
                   rng: torch.Generator) -> int:
        """Draw the next id given features h (1, D)."""
        decoder = self.model.decoder
        plain = options.temperature == 1.0 and options.top_k == 0 and options.top_p == 1.0
        if (plain and isinstance(decoder, nn.AdaptiveLogSoftmaxWithLoss)
                and all(b < decoder.shortlist_size for b in self._banned(options))):
            return sample_adaptive(decoder, h, self._banned(options), rng)
        log_probs = self.model.log_probs(h)[0].float()  # (V,)
        return sample_from_log_probs(log_probs, options, self._banned(options), rng)


def sample_from_log_probs(log_probs: torch.Tensor, options: SamplingOptions,
                          banned: list[int], rng: torch.Generator) -> int:
    """Temperature, top-k and top-p sampling from a full log-distribution (V,)."""
    log_probs = log_probs.clone()
    if banned:
        log_probs[banned] = -float("inf")
    if options.temperature == 0:
        return int(log_probs.argmax())
    logits = log_probs / options.temperature
    if options.top_k:
        kth = torch.topk(logits, min(options.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if options.top_p < 1.0:
        # Keep the smallest set of most likely words whose probability reaches top_p.
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= options.top_p  # mass before this word
        logits[order[drop]] = -float("inf")
    probs = logits.softmax(-1).cpu()
    return int(torch.multinomial(probs, 1, generator=rng))


def sample_adaptive(decoder: nn.AdaptiveLogSoftmaxWithLoss, h: torch.Tensor,
                    banned_head: list[int], rng: torch.Generator) -> int:
    """Exact sampling from an adaptive softmax without the full distribution.

    p(word) = p_head(cluster) * p_cluster(word): draw from the head (frequent words plus
    one entry per tail cluster); if a cluster is drawn, draw only inside it. Banned
    words must lie in the head, where removing them renormalises exactly as on the full
    distribution.
    """
    head_logits = decoder.head(h)[0].float()  # (shortlist + n_clusters,)
    if banned_head:
        head_logits[banned_head] = -float("inf")
    choice = int(torch.multinomial(F.softmax(head_logits, -1).cpu(), 1, generator=rng))
    if choice < decoder.shortlist_size:
        return choice
    cluster = choice - decoder.shortlist_size
    tail_logits = decoder.tail[cluster](h)[0].float()
    within = int(torch.multinomial(F.softmax(tail_logits, -1).cpu(), 1, generator=rng))
    return decoder.cutoffs[cluster] + within
