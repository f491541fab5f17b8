"""Text generation from a prompt, usable without DVC:

    import lstmlm
    generator = lstmlm.load("data/model.pt")           # a Generator
    print(generator.generate("The Beatles are", words=50, temperature=0.8, seed=0).text)

(``Generator(model, vocab)`` works as well with a model from ``checkpoint.load`` or one
built in code.) The settings are lstmlm.options.SamplingOptions (also importable from here): the
``sample`` section of params.yaml, the command's options and the page's controls.

The whole prompt primes the hidden state (after an ``<eos>``, as if it began a line),
tokenised with the scheme the model was trained with; then words are drawn one at a
time (lstmlm.sampling): temperature (0 = greedy), top-k, top-p, optionally never ``<unk>``.

Speed (CPU, one stream): per word the generator runs one LSTM step and the output layer,
nothing else. The step (:class:`FusedStep`) uses fused weights (one matrix product per
layer) instead of ``nn.LSTM``, whose oneDNN path costs several times more for a single
time step; with an adaptive softmax at temperature 1 the full distribution is never
computed (lstmlm.sampling.sample_adaptive).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from . import sampling
from .checkpoint import load
from .errors import LstmlmError
from .model import LSTMLanguageModel, State
from .options import SamplingOptions
from .text import SCHEMES, detokenise, tokenise_prompt
from .vocab import Vocabulary

# The prompt primes the state this many tokens at a time, so a huge prompt (100 KB of text
# is ~20k tokens) needs memory for one chunk's activations, not for the whole prompt.
PRIME_CHUNK = 512


@dataclass
class Generation:
    """A prompt's continuation: raw tokens, readable text, and the prompt's unknown words."""

    prompt: str
    tokens: list[str]
    unknown_words: list[str] = field(default_factory=list)
    scheme: str = "wikitext"

    @property
    def text(self) -> str:
        """The continuation detokenised for reading (``<eos>`` becomes a line break)."""
        return detokenise(self.tokens, self.scheme)


class Generator:
    """Draws words from a trained model; keeps no state between calls.

    The model must not be trained while a stream is being drawn: a stream copies the
    LSTM weights into fused matrices when it starts.
    """

    def __init__(self, model: LSTMLanguageModel, vocab: Vocabulary,
                 info: dict[str, Any] | None = None):
        if model.vocab_size != len(vocab):
            raise LstmlmError(f"the model has {model.vocab_size} output words but the "
                              f"vocabulary has {len(vocab)}: they do not belong together")
        if vocab.scheme not in SCHEMES:
            raise LstmlmError(f"the vocabulary's tokenisation scheme {vocab.scheme!r} is unknown; "
                              f"expected one of {', '.join(SCHEMES)}")
        self.model = model.eval()
        self.vocab = vocab
        self.info = info or {}
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, checkpoint: str | Path, vocab_path: str | Path | None = None,
             map_location: str | torch.device = "cpu") -> "Generator":
        """A generator for a checkpoint (see lstmlm.checkpoint.load); ``info`` holds the
        checkpoint's metadata."""
        return cls(*load(checkpoint, vocab_path, map_location))

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

    def stream(self, prompt: str, options: SamplingOptions | None = None,
               **settings: Any) -> Iterator[str]:
        """Yield generated tokens one by one (``<eos>`` included). ``settings`` change
        single options: ``stream("I like", words=20, seed=1)``."""
        options = (options or SamplingOptions()).replace(**settings)
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
        step = FusedStep(self.model, state)
        for n in range(options.words):
            next_id = self._next_token(features, options, rng, banned)
            yield words[next_id]
            if options.stop_at_eos and next_id == eos_id:
                return
            if n + 1 < options.words:  # the last word needs no step after it
                features = step(next_id)

    def generate(self, prompt: str, options: SamplingOptions | None = None,
                 **settings: Any) -> Generation:
        """Generate ``words`` tokens after the prompt (fewer if stopped at ``<eos>``);
        ``settings`` change single options, as for stream()."""
        options = (options or SamplingOptions()).replace(**settings)
        ids, unknown = self.encode_prompt(prompt)
        return Generation(prompt, list(self.stream_ids(ids, options)), unknown,
                          self.vocab.scheme)

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
        if isinstance(decoder, nn.AdaptiveLogSoftmaxWithLoss):
            if options.temperature == 0:
                return sampling.greedy_adaptive(decoder, h, banned)
            if options.plain:
                return sampling.sample_adaptive(decoder, h, banned, rng)
        return sampling.sample_from_log_probs(
            self.model.log_probs(h)[0], rng, temperature=options.temperature,
            top_k=options.top_k, top_p=options.top_p, banned=banned)


class FusedStep:
    """One time step of the model's LSTMs for a single stream, from a given state.

    ``nn.LSTM`` on CPU goes through oneDNN, whose per-call setup costs several times the
    arithmetic of one step. Here each layer's input and hidden weights are concatenated
    into one (in + hidden, 4 hidden) matrix, so a step is one ``addmm`` per layer plus
    the gate nonlinearities, working in preallocated buffers. Eval mode only: no dropout.
    """

    def __init__(self, model: LSTMLanguageModel, state: State):
        self.model = model
        self.embedding = None if model.encoder is None else model.encoder.weight
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

    def __call__(self, token_id: int) -> torch.Tensor:
        """Feed one token; return the features (1, D) for predicting the next one."""
        if self.embedding is not None:
            x = self.embedding[token_id]
        else:  # adaptive input: the tied softmax's weights
            x = self.model.embed(torch.tensor([token_id]))[0]
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
