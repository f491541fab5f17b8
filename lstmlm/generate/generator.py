"""Text generation from a prompt, usable without DVC, and without torch:

    import lstmlm
    generator = lstmlm.load("data/model.pt")           # a Generator
    generation = generator.generate("The Beatles are", words=50, temperature=0.8)
    print(generation.full_text, generation.seed)       # seed=... draws it again

(``Generator(model, vocab)`` works as well with a torch model.) The settings are
lstmlm.generate.options.SamplingOptions: the ``sample`` section of params.yaml, the
command's options and the page's controls. As the command and the page, a call without a
seed draws a fresh text and reports the seed it drew (``Generation.seed``, ``Stream.seed``).

The whole prompt primes the hidden state (after an ``<eos>``, as if it began a line),
tokenised with the scheme the model was trained with (lstmlm.generate.text); then words
are drawn one at a time (lstmlm.generate.sampling) by the numpy engine
(lstmlm.generate.engine). A generator loaded from a file never imports torch; one given a
torch model draws from numpy copies of its weights, copied again when they change.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from lstmlm.core.errors import LstmlmError, shorten, shown
from lstmlm.core.loading import Weights, build_model, load_weights
from lstmlm.core.threads import BLAS_THREADS
from lstmlm.data.schemes import SCHEMES
from lstmlm.data.vocab import Vocabulary
from lstmlm.generate.engine import AdaptiveOutput, Engine, FullOutput, FusedStep
from lstmlm.generate.options import FRESH, SamplingOptions, seeded
from lstmlm.generate.sampling import AdaptiveGreedy, AdaptiveSampler, sample_from_log_probs
from lstmlm.generate.text import detokenise, tokenise_prompt, with_prompt

if TYPE_CHECKING:
    import torch

    from lstmlm.model.lstm import LSTMLanguageModel

# features h (D,), the stream's RNG -> the next id
Picker = Callable[[np.ndarray, random.Random], int]


@dataclass
class Generation:
    """A prompt's continuation: raw tokens, readable text with and without the prompt, the
    prompt's unknown words, and the seed that draws the same text again."""

    prompt: str
    tokens: list[str]
    unknown_words: list[str] = field(default_factory=list)
    scheme: str = "wikitext"
    seed: int | None = None

    @property
    def continuation(self) -> str:
        """The generated words alone, detokenised for reading (``<eos>``: a line break)."""
        return detokenise(self.tokens, self.scheme)

    @property
    def full_text(self) -> str:
        """The prompt and its continuation, as ``python -m lstmlm generate`` prints them."""
        return "".join(with_prompt(self.prompt, self.tokens, self.scheme))

    @property
    def text(self) -> str:
        """The continuation (older name of ``continuation``)."""
        return self.continuation


class Stream(Iterator[str]):
    """Tokens as they are drawn (``<eos>`` included), and the ``seed`` they are drawn with."""

    def __init__(self, tokens: Iterator[str], seed: int | None):
        self._tokens, self.seed = tokens, seed

    def __next__(self) -> str:
        return next(self._tokens)

    def close(self) -> None:
        self._tokens.close()


class Generator:
    """Draws words from a trained model; keeps no state between calls.

    ``model``: a torch model, or its Weights (lstmlm.core.loading.load_weights).
    ``threads``: BLAS threads to draw on (default 1; None: the library's own setting),
    set around each piece of work and restored after it (see lstmlm.core.threads).

    A torch model must not be trained while a stream is being drawn: a stream lays out
    its weights when it starts.
    """

    def __init__(self, model: LSTMLanguageModel | Weights, vocab: Vocabulary,
                 info: dict[str, Any] | None = None, *, threads: int | None = 1):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise LstmlmError(f"threads: {shown(threads)} is not allowed; expected an integer "
                              ">= 1, or None for the BLAS library's own setting")
        stored = isinstance(model, Weights)
        if not stored and model.vocab_size != len(vocab):
            raise LstmlmError(f"the model has {model.vocab_size} output words but the "
                              f"vocabulary has {len(vocab)}: they do not belong together")
        if vocab.scheme not in SCHEMES:
            raise LstmlmError(f"the vocabulary's tokenisation scheme {shown(vocab.scheme)} is unknown; "
                              f"expected one of {', '.join(SCHEMES)}")
        self.config = model.config
        self._weights = model if stored else None
        self._model = None if stored else model.eval()
        self.vocab = vocab
        self.info = info or {}
        self.threads = threads
        self.model_device: str | torch.device = "cpu"  # where `model` builds a torch model
        self._engine: tuple[Any, Engine] | None = None  # (the weights' version, their layout)

    @classmethod
    def load(cls, checkpoint: str | Path, vocab_path: str | Path | None = None,
             map_location: str | torch.device = "cpu", *,
             threads: int | None = 1) -> "Generator":
        """A generator for a checkpoint (see lstmlm.core.loading.load_weights), without
        torch; ``info`` holds the checkpoint's metadata, and ``map_location`` is where
        ``generator.model`` is built if asked for."""
        generator = cls(*load_weights(checkpoint, vocab_path), threads=threads)
        generator.model_device = map_location
        with BLAS_THREADS.use(threads):
            generator.engine()  # laid out now: a model the engine cannot run is refused here
        return generator

    @property
    def model(self) -> LSTMLanguageModel:
        """The torch model: the one given, or built from the checkpoint's weights (on
        ``model_device``, importing torch) when first asked for. Generation follows it
        from then on, changes included."""
        if self._model is None:
            self._model = build_model(self._weights, len(self.vocab)).to(self.model_device)
        return self._model

    def engine(self) -> Engine:
        """The weights laid out for generation: for the first stream that needs them,
        and again only when the torch model's weights have changed since (a tensor's
        version counts its in-place changes: an optimiser step, load_state_dict)."""
        key = "stored" if self._model is None else _weights_version(self._model)
        cached = self._engine
        if key is None or cached is None or cached[0] != key:
            weights = self._weights if self._model is None else _numpy_weights(self._model)
            engine = Engine(weights, len(self.vocab))
            cached = self._engine = (key, engine)
        return cached[1]

    # ------------------------------------------------------------------ prompt

    def encode_prompt(self, prompt: str) -> tuple[list[int], list[str]]:
        """Prompt -> ids (after a leading ``<eos>``) and the distinct words not in the
        vocabulary (read as ``<unk>``), in order of appearance."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a str, got {type(prompt).__name__} "
                            f"({shorten(repr(prompt), 40)})")
        tokens = tokenise_prompt(prompt, self.vocab.scheme)
        index = self.vocab.index
        unknown = list(dict.fromkeys(t for t in tokens if t not in index))
        return [self.vocab.eos_id] + self.vocab.encode(tokens), unknown

    # ------------------------------------------------------------------ generation

    def stream(self, prompt: str, options: SamplingOptions | None = None,
               **settings: Any) -> Stream:
        """Generated tokens one by one (``<eos>`` included), and ``.seed``. ``settings``
        change single options: ``stream("I like", words=20, seed=1)``."""
        options = _options(options, settings)
        ids, _ = self.encode_prompt(prompt)
        return Stream(self.stream_ids(ids, options), options.seed)

    def stream_ids(self, ids: Sequence[int], options: SamplingOptions) -> Iterator[str]:
        """Yield tokens generated after prompt ids (as from encode_prompt)."""
        if not ids:
            raise ValueError("stream_ids() needs at least one id")
        # random.Random(None) seeds itself from the OS; a seed reproduces the output on the
        # same model, whatever else the program draws (no global RNG is used).
        rng = random.Random(options.seed)
        words, eos_id = self.vocab.words, self.vocab.eos_id
        # Every piece of work runs on our threads; the caller's setting is back whenever
        # a word is handed over.
        with BLAS_THREADS.use(self.threads):
            engine = self.engine()
            pick = self._picker(engine.output, options, self._banned(options))
            step = FusedStep(engine.step)
            next_id = pick(step.prime(list(ids)), rng)
        yield words[next_id]
        for _ in range(options.words - 1):
            if options.stop_at_eos and next_id == eos_id:
                return
            with BLAS_THREADS.use(self.threads):
                next_id = pick(step(next_id), rng)
            yield words[next_id]

    def generate(self, prompt: str, options: SamplingOptions | None = None,
                 **settings: Any) -> Generation:
        """Generate ``words`` tokens after the prompt (fewer if stopped at ``<eos>``);
        ``settings`` change single options, as for stream()."""
        options = _options(options, settings)
        ids, unknown = self.encode_prompt(prompt)
        return Generation(prompt, list(self.stream_ids(ids, options)), unknown,
                          self.vocab.scheme, options.seed)

    # ------------------------------------------------------------------ one draw

    def _banned(self, options: SamplingOptions) -> list[int]:
        return [] if options.allow_unk else [self.vocab.unk_id]

    @staticmethod
    def _picker(output: AdaptiveOutput | FullOutput, options: SamplingOptions,
                banned: list[int]) -> Picker:
        """Chosen once per stream: with an adaptive softmax, from the head and only the
        tail clusters needed (any temperature and top-p; greedy skips the clusters that
        cannot win); with top-k or a full softmax, from the full distribution
        (lstmlm.generate.sampling.sample_from_log_probs, the reference)."""
        if isinstance(output, AdaptiveOutput):
            if options.temperature == 0:
                return AdaptiveGreedy(output, banned)
            if options.top_k == 0:
                return AdaptiveSampler(output, options.temperature, options.top_p,
                                                banned)

        def full(h: np.ndarray, rng: random.Random) -> int:
            return sample_from_log_probs(
                output.log_probs(h), rng, temperature=options.temperature,
                top_k=options.top_k, top_p=options.top_p, banned=banned)
        return full


def _options(options: Any, settings: dict[str, Any]) -> SamplingOptions:
    """The options of a call: ``options`` (a SamplingOptions, or None for the defaults,
    FRESH) with single ``settings`` changed, and a seed drawn when none is set."""
    if options is None:
        options = FRESH
    elif not isinstance(options, SamplingOptions):
        raise TypeError(f"options: expected a SamplingOptions, got {type(options).__name__}; "
                        "pass single settings as keywords instead (words=20, seed=1)")
    return seeded(options.replace(**settings))


def _numpy_weights(model: LSTMLanguageModel) -> Weights:
    """A torch model's weights as float32 numpy arrays (views of a CPU model's own)."""
    return Weights(model.config, {name: tensor.detach().cpu().float().numpy()
                                  for name, tensor in model.state_dict().items()})


def _weights_version(model: LSTMLanguageModel) -> tuple | None:
    """Which weights, in which version: equal keys mean unchanged weights. None for
    tensors made under inference_mode, which keep no version counter."""
    try:
        return tuple((p.data_ptr(), p._version) for p in model.parameters())
    except RuntimeError:
        return None
