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
nothing else: the step on weights laid out once (lstmlm.fused_step) instead of
``nn.LSTM``, whose oneDNN path costs several times more for a single time step; with an
adaptive softmax the draw computes the head and only the tail clusters it needs, at any
temperature and top-p (lstmlm.sampling.AdaptiveSampler). Both read the weights they use
from memory for every word; that reading, not arithmetic, sets the speed.

Threads: a Generator draws on ``threads`` torch threads (default 1), set around each
piece of work and restored before control returns to the caller, so the caller's
``torch.get_num_threads()`` is what it was between calls and between a stream's words.
On a quiet machine a second thread speeds one stream up by a third at most; on a busy
one the threads wait on each other, and with two busy processes beside it two threads
were 41 times slower than one (issue 21). ``threads=None`` leaves torch's setting alone.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from . import sampling
from .checkpoint import load
from .errors import LstmlmError
from .fused_step import FusedStep, StepWeights
from .model import LSTMLanguageModel, State
from .options import SamplingOptions
from .text import SCHEMES, detokenise, tokenise_prompt
from .vocab import Vocabulary

# The prompt primes the state this many tokens at a time, so a huge prompt (100 KB of text
# is ~20k tokens) needs memory for one chunk's activations, not for the whole prompt.
PRIME_CHUNK = 512

# features h (1, D), the stream's RNG -> the next id
Picker = Callable[[torch.Tensor, random.Random], int]


class _TorchThreads:
    """torch's intra-op thread count, set for the work inside ``with TORCH_THREADS.use(n)``
    and restored when the last user leaves. torch.set_num_threads is process-wide, and a
    server draws several streams at once from worker threads: a count of users, under a
    lock, makes the last one out restore what the caller had."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    def use(self, n: int | None) -> "_InUse":
        return _InUse(self, n)

    def enter(self, n: int) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = torch.get_num_threads()
            self._users += 1
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and torch.get_num_threads() != self._saved:
                torch.set_num_threads(self._saved)


class _InUse:
    """One ``with`` of _TorchThreads.use (a class, not a contextlib generator: it is
    entered once per word); n None leaves torch's setting alone."""

    __slots__ = ("threads", "n")

    def __init__(self, threads: _TorchThreads, n: int | None):
        self.threads, self.n = threads, n

    def __enter__(self) -> None:
        if self.n is not None:
            self.threads.enter(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.n is not None:
            self.threads.leave()


TORCH_THREADS = _TorchThreads()


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

    ``threads``: torch threads to draw on (default 1; None: torch's own setting), set
    around each piece of work and restored after it (see the module docstring).

    The model must not be trained while a stream is being drawn: a stream copies the
    LSTM weights into fused matrices when it starts.
    """

    def __init__(self, model: LSTMLanguageModel, vocab: Vocabulary,
                 info: dict[str, Any] | None = None, *, threads: int | None = 1):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise LstmlmError(f"threads: {threads!r} is not allowed; expected an integer "
                              ">= 1, or None for torch's own setting")
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
        self.threads = threads
        self._layouts: dict[str, tuple[Any, Any]] = {}  # name -> (weights' version, layout)

    @classmethod
    def load(cls, checkpoint: str | Path, vocab_path: str | Path | None = None,
             map_location: str | torch.device = "cpu", *,
             threads: int | None = 1) -> "Generator":
        """A generator for a checkpoint (see lstmlm.checkpoint.load); ``info`` holds the
        checkpoint's metadata."""
        return cls(*load(checkpoint, vocab_path, map_location), threads=threads)

    # ------------------------------------------------------------------ prompt

    def encode_prompt(self, prompt: str) -> tuple[list[int], list[str]]:
        """Prompt -> ids (after a leading ``<eos>``) and the distinct words not in the
        vocabulary (read as ``<unk>``), in order of appearance."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a str, got {type(prompt).__name__} "
                            f"({_preview(prompt)})")
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
        options = _options(options, settings)
        ids, _ = self.encode_prompt(prompt)
        return self.stream_ids(ids, options)

    @torch.inference_mode()  # the decorator (unlike a `with` inside) is generator-safe
    def stream_ids(self, ids: Sequence[int], options: SamplingOptions) -> Iterator[str]:
        """Yield tokens generated after prompt ids (as from encode_prompt)."""
        # random.Random(None) seeds itself from the OS; a seed reproduces the output on the
        # same model, whatever else the program draws (no global RNG is used).
        rng = random.Random(options.seed)
        words, eos_id = self.vocab.words, self.vocab.eos_id
        # Every piece of work runs on our threads; the caller's setting is back whenever
        # a word is handed over.
        with TORCH_THREADS.use(self.threads):
            pick = self.picker(options)
            features, state = self.prime(ids)
            next_id = pick(features, rng)
        yield words[next_id]  # before the fused weights are laid out: the first word sooner
        step = None
        for _ in range(options.words - 1):
            if options.stop_at_eos and next_id == eos_id:
                return
            with TORCH_THREADS.use(self.threads):
                step = step or FusedStep(self.model, state, self.step_weights())
                next_id = pick(step(next_id), rng)
            yield words[next_id]

    def generate(self, prompt: str, options: SamplingOptions | None = None,
                 **settings: Any) -> Generation:
        """Generate ``words`` tokens after the prompt (fewer if stopped at ``<eos>``);
        ``settings`` change single options, as for stream()."""
        options = _options(options, settings)
        ids, unknown = self.encode_prompt(prompt)
        return Generation(prompt, list(self.stream_ids(ids, options)), unknown,
                          self.vocab.scheme)

    def step_weights(self) -> StepWeights:
        """The LSTM weights laid out for FusedStep (see _laid_out)."""
        return self._laid_out("step", lambda: StepWeights(self.model))

    def output_weights(self) -> sampling.OutputWeights:
        """An adaptive softmax's weights laid out for the draws (see _laid_out)."""
        return self._laid_out("output", lambda: sampling.OutputWeights(self.model.decoder))

    def _laid_out(self, name: str, build: Callable[[], Any]) -> Any:
        """Weights laid out for one stream at a time: built for the first stream that
        needs them, and again only when a weight has changed since (a tensor's version
        counts its in-place changes: an optimiser step, load_state_dict)."""
        key = _weights_version(self.model)
        cached = self._layouts.get(name)
        if key is None or cached is None or cached[0] != key:
            cached = self._layouts[name] = (key, build())
        return cached[1]

    # ------------------------------------------------------------------ one draw

    def _banned(self, options: SamplingOptions) -> list[int]:
        return [] if options.allow_unk else [self.vocab.unk_id]

    def picker(self, options: SamplingOptions, banned: list[int] | None = None) -> Picker:
        """How a stream draws each word, chosen once: with an adaptive softmax, from the
        head and only the tail clusters needed (any temperature and top-p; greedy skips
        the clusters that cannot win); with top-k or a full softmax, from the full
        distribution (lstmlm.sampling.sample_from_log_probs, the reference). ``banned``
        defaults to what the options ban (``<unk>`` unless allowed)."""
        banned = self._banned(options) if banned is None else banned
        decoder = self.model.decoder
        if isinstance(decoder, nn.AdaptiveLogSoftmaxWithLoss):
            weights = self.output_weights()
            if options.temperature == 0:
                return sampling.AdaptiveGreedy(decoder, banned, weights)
            if options.top_k == 0:
                return sampling.AdaptiveSampler(decoder, options.temperature, options.top_p,
                                                banned, weights)

        def full(h: torch.Tensor, rng: random.Random) -> int:
            return sampling.sample_from_log_probs(
                self.model.log_probs(h)[0], rng, temperature=options.temperature,
                top_k=options.top_k, top_p=options.top_p, banned=banned)
        return full

    @torch.inference_mode()
    def next_token(self, h: torch.Tensor, options: SamplingOptions, rng: random.Random,
                   banned: list[int] | None = None) -> int:
        """Draw the next id given features h (1, D); ``banned`` defaults to what the
        options ban (``<unk>`` unless allowed)."""
        with TORCH_THREADS.use(self.threads):
            return self.picker(options, banned)(h, rng)


def _options(options: Any, settings: dict[str, Any]) -> SamplingOptions:
    """The options of a call: ``options`` (a SamplingOptions, or None for the defaults)
    with single ``settings`` changed."""
    if options is None:
        options = SamplingOptions()
    elif not isinstance(options, SamplingOptions):
        raise TypeError(f"options: expected a SamplingOptions, got {type(options).__name__}; "
                        "pass single settings as keywords instead (words=20, seed=1)")
    return options.replace(**settings)


def _weights_version(model: nn.Module) -> tuple | None:
    """Which weights, in which version: equal keys mean unchanged weights. None for
    tensors made under inference_mode, which keep no version counter."""
    try:
        return tuple((p.data_ptr(), p._version) for p in model.parameters())
    except RuntimeError:
        return None


def _preview(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"
