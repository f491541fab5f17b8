"""The ``model`` section of params.yaml: the model's shape, and the weights a shape calls for.

``model.cutoffs`` may be shares of the vocabulary; they become word counts once, where the
vocabulary is first known (:meth:`ModelConfig.for_vocab`: the params and train stages),
and everything downstream (the model, the memory estimate, the checkpoint) takes that
sized config. No torch here: the checkpoint reader checks a stored config, and the shapes
of the weights it claims, before anything is built (and ``python -m lstmlm generate``
never imports torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lstmlm.core.errors import shown
from lstmlm.core.params import ParamsError, spec

# The adaptive softmax's default clusters, as shares of the vocabulary: rounded, they are
# the [2000, 10000] of the literature on WikiText-2's 33,278 words (2000.008, 10000.04).
SHARE_CUTOFFS = (0.0601, 0.3005)


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` section of params.yaml, and what every checkpoint stores to rebuild
    the model (with the vocabulary size, which comes from the data, not from params)."""

    emb: int = spec(256, low=1, doc="embedding width")
    hidden: int = spec(512, low=1, doc="LSTM width")
    layers: int = spec(1, low=1, high=8)
    input_dropout: float = spec(0.25, low=0.0, high=1.0, high_open=True,
                                doc="locked dropout on the embeddings")
    layer_dropout: float = spec(0.25, low=0.0, high=1.0, high_open=True,
                                doc="locked dropout between LSTM layers")
    output_dropout: float = spec(0.25, low=0.0, high=1.0, high_open=True,
                                 doc="locked dropout on the top LSTM's output")
    word_dropout: float = spec(0.05, low=0.0, high=1.0, high_open=True,
                               doc="drops whole words (embedding rows)")
    weight_dropout: float = spec(0.0, low=0.0, high=1.0, high_open=True,
                                 doc="DropConnect on the hidden-to-hidden weights")
    tie_weights: bool = spec(True, doc="share the input embedding with the output layer "
                             "(with output adaptive: adaptive input embeddings)")
    output: str = spec("adaptive", choices=("adaptive", "full"))
    cutoffs: list[int | float] = spec(list(SHARE_CUTOFFS), item_low=0, item_low_open=True,
                                doc="adaptive softmax clusters over the frequency-sorted "
                                "vocabulary: shares of it (numbers between 0 and 1; the "
                                "default gives WikiText-2's [2000, 10000]), or word counts")
    div_value: float = spec(4.0, low=1.0)
    init: str = spec("seed", choices=("seed", "torch"),
                     doc="seed: Xavier / orthogonal / zero biases, as the seed notebook")
    forget_gate_bias: float = spec(0.0, doc="initial forget-gate bias (Jozefowicz et al. "
                                   "2015 suggest 1: remember by default)")

    def __post_init__(self) -> None:
        cutoffs = self.cutoffs
        counts = all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in cutoffs)
        shares = all(isinstance(c, float) and 0 < c < 1 for c in cutoffs)  # (spec: numbers > 0)
        if not cutoffs or not (counts or shares):
            raise ValueError(f"model.cutoffs: {shown(cutoffs)} is not allowed; expected a non-empty "
                             "list of positive integers (word counts) or of numbers between 0 "
                             f"and 1 (shares of the vocabulary, such as {list(SHARE_CUTOFFS)})")
        if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
            raise ValueError(f"model.cutoffs: {shown(cutoffs)} is not allowed; expected strictly "
                             "increasing numbers")

        narrowest = int(self.out_dim // self.div_value ** len(cutoffs))
        if self.output == "adaptive" and narrowest < 1:
            raise ValueError(f"model.div_value: {self.div_value:g} is not allowed with "
                             f"{len(cutoffs)} tail clusters of a {self.out_dim}-wide output: the "
                             "last cluster would have width 0; lower it or use fewer cutoffs")

    def for_vocab(self, vocab_size: int) -> "ModelConfig":
        """This config sized for a vocabulary of ``vocab_size`` words: the adaptive
        softmax's cutoffs as word counts (shares rounded to the nearest word, each at least
        one more than the one before), as the model and its checkpoint hold them. Raises
        ParamsError (a user's error, and a ValueError) naming model.cutoffs when they do
        not lie strictly inside the vocabulary."""
        if self.output != "adaptive":
            return self
        cutoffs: list[int] = []
        for cutoff in self.cutoffs:
            count = round(cutoff * vocab_size) if isinstance(cutoff, float) else cutoff
            cutoffs.append(max(count, cutoffs[-1] + 1 if cutoffs else 1))
        if cutoffs[-1] >= vocab_size:
            from_shares = cutoffs != self.cutoffs
            here = f" (here {cutoffs})" if from_shares else ""
            remedy = ("fewer cutoffs" if from_shares else
                      f"shares of the vocabulary, such as {list(SHARE_CUTOFFS)} (the default)")
            raise ParamsError(f"model.cutoffs: {shown(self.cutoffs)}{here} is not allowed; the last "
                             f"cutoff must be below the vocabulary size {vocab_size}; use "
                             f"{remedy}, or model.output: full")
        return dataclasses.replace(self, cutoffs=cutoffs)

    @property
    def tied_adaptive(self) -> bool:
        """Tied to an adaptive softmax: the input embedding is the softmax's weights."""
        return self.tie_weights and self.output == "adaptive"

    @property
    def out_dim(self) -> int:
        """Width of the features fed to the output layer."""
        return self.emb if self.tie_weights else self.hidden

    def check_sized(self, vocab_size: int) -> None:
        """Raise ValueError unless this config is sized for ``vocab_size`` words (see
        for_vocab): what the model, its weights and their memory are computed from."""
        if self.output == "adaptive" and self.for_vocab(vocab_size).cutoffs != self.cutoffs:
            raise ValueError(f"model.cutoffs {shown(self.cutoffs)} are not word counts for "
                             f"{vocab_size} words: size the config with "
                             "ModelConfig.for_vocab(vocab_size) first")

    def weight_shapes(self, vocab_size: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every weight LSTMLanguageModel(self, vocab_size) holds, as its
        state_dict names them (tests/test_checkpoint.py compares the two): what a
        checkpoint of this config must hold, known without building anything. The config
        must be sized for the vocabulary (check_sized)."""
        self.check_sized(vocab_size)
        c = self
        four_h = 4 * c.hidden
        shapes: dict[str, tuple[int, ...]] = {}
        if not c.tied_adaptive:
            shapes["encoder.weight"] = (vocab_size, c.emb)
        for i in range(c.layers):
            shapes |= {f"lstms.{i}.weight_ih_l0": (four_h, c.emb if i == 0 else c.hidden),
                       f"lstms.{i}.weight_hh_l0": (four_h, c.hidden),
                       f"lstms.{i}.bias_ih_l0": (four_h,), f"lstms.{i}.bias_hh_l0": (four_h,)}
        if c.tie_weights and c.hidden != c.emb:
            shapes["projection.weight"] = (c.emb, c.hidden)
        if c.output == "full":
            return shapes | {"decoder.weight": (vocab_size, c.out_dim),
                             "decoder.bias": (vocab_size,)}
        # nn.AdaptiveLogSoftmaxWithLoss: a head over the shortlist and one entry per
        # cluster; cluster k projects to out_dim // div_value^(k+1), then to its words.
        bounds = [*c.cutoffs, vocab_size]
        shapes["decoder.head.weight"] = (bounds[0] + len(c.cutoffs), c.out_dim)
        for k, (start, end) in enumerate(zip(bounds, bounds[1:])):
            narrow = int(c.out_dim // (c.div_value ** (k + 1)))
            shapes[f"decoder.tail.{k}.0.weight"] = (narrow, c.out_dim)
            shapes[f"decoder.tail.{k}.1.weight"] = (end - start, narrow)
        return shapes
