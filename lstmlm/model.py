"""The LSTM language model: embedding -> stacked LSTMs -> full or adaptive softmax.

Tensors are time-major, as nn.LSTM expects by default:

    ids       (T, B)      T time steps of B parallel streams
    features  (T, B, D)   the top layer's output (D = emb when weights are tied)
    state     [(h, c)] * layers, each (1, B, hidden)

Regularisation follows AWD-LSTM (Merity et al., 2017): embedding-row dropout, "locked"
dropout (one mask per sequence, shared over time) on the embeddings, between layers and
on the output, and optional DropConnect on the hidden-to-hidden weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

State = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored in every checkpoint."""

    vocab_size: int
    emb: int = 256
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.25
    dropout_input: float = 0.25
    dropout_hidden: float = 0.25
    dropout_embedding: float = 0.05
    weight_drop: float = 0.0
    tie_weights: bool = False
    output: str = "adaptive"
    cutoffs: tuple[int, ...] = (2000, 10000)
    div_value: float = 4.0
    init: str = "seed"

    @classmethod
    def from_params(cls, params: Any, vocab_size: int) -> "ModelConfig":
        """Build from the ``model`` params section (a ModelParams) and the vocabulary size."""
        values = dataclasses.asdict(params)
        values["cutoffs"] = tuple(values["cutoffs"])
        return cls(vocab_size=vocab_size, **values)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"model config has unknown keys: {sorted(unknown)}")
        values = dict(values)
        values["cutoffs"] = tuple(values.get("cutoffs", ()))
        return cls(**values)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["cutoffs"] = list(self.cutoffs)
        return values

    @property
    def out_dim(self) -> int:
        """Width of the features fed to the softmax."""
        return self.emb if self.tie_weights else self.hidden


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with one mask per sequence: x (T, B, D), mask (1, B, D) shared over T."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedding_dropout(embed: nn.Embedding, ids: torch.Tensor, p: float,
                      training: bool) -> torch.Tensor:
    """Drop whole words: zero a random subset of embedding rows for this batch."""
    weight = embed.weight
    if training and p > 0.0:
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(ids, weight)


class LSTMLanguageModel(nn.Module):
    """Word-level LSTM language model (see the module docstring for layouts)."""

    def __init__(self, config: ModelConfig, *, init_weights: bool = True):
        """``init_weights=False`` skips the configured initialisation, for a model whose
        weights are loaded right after (the seed init's orthogonal QRs take seconds)."""
        super().__init__()
        self.config = config
        c = config
        self.encoder = nn.Embedding(c.vocab_size, c.emb)
        self.lstms = nn.ModuleList(
            nn.LSTM(c.emb if i == 0 else c.hidden, c.hidden) for i in range(c.layers))
        # Tying needs features of width emb: project the top layer when hidden != emb.
        self.projection = (nn.Linear(c.hidden, c.emb, bias=False)
                           if c.tie_weights and c.hidden != c.emb else None)
        if c.output == "full":
            self.decoder = nn.Linear(c.out_dim, c.vocab_size)
            if c.tie_weights:
                self.decoder.weight = self.encoder.weight
        elif c.output == "adaptive":
            # Relies on ids sorted by frequency: [0, cutoffs[0]) is the head.
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(
                c.out_dim, c.vocab_size, list(c.cutoffs), div_value=c.div_value)
        else:
            raise ValueError(f"unknown output layer {c.output!r}")
        if c.init == "seed" and init_weights:
            self._init_like_seed()

    def _init_like_seed(self) -> None:
        """Xavier for input-to-hidden, orthogonal for hidden-to-hidden, zero biases."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        for lstm in self.lstms:
            for name, param in lstm.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    # One orthogonal block per gate (i, f, g, o), each (hidden, hidden).
                    for gate in param.data.chunk(4, dim=0):
                        nn.init.orthogonal_(gate)
                elif name.startswith("bias"):
                    nn.init.zeros_(param)
        if isinstance(self.decoder, nn.Linear) and not self.config.tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        if isinstance(self.decoder, nn.Linear):
            nn.init.zeros_(self.decoder.bias)

    # ------------------------------------------------------------------ recurrence

    def init_state(self, batch_size: int) -> State:
        """Zero (h, c) for every layer, on the model's device."""
        weight = self.encoder.weight
        return [(weight.new_zeros(1, batch_size, self.config.hidden),
                 weight.new_zeros(1, batch_size, self.config.hidden))
                for _ in range(self.config.layers)]

    def _run_lstm(self, lstm: nn.LSTM, x: torch.Tensor, state) -> tuple[torch.Tensor, Any]:
        p = self.config.weight_drop
        if not self.training or p == 0.0:
            return lstm(x, state)
        # DropConnect: one mask over the recurrent weights for the whole sequence.
        dropped = F.dropout(lstm.weight_hh_l0, p=p, training=True)
        return torch.func.functional_call(lstm, {"weight_hh_l0": dropped}, (x, state),
                                          strict=False)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (T, B) -> features (T, B, out_dim), new state."""
        c = self.config
        if state is None:
            state = self.init_state(ids.size(1))
        x = embedding_dropout(self.encoder, ids, c.dropout_embedding, self.training)
        x = locked_dropout(x, c.dropout_input, self.training)
        new_state: State = []
        for i, lstm in enumerate(self.lstms):
            x, layer_state = self._run_lstm(lstm, x, state[i])
            new_state.append(layer_state)
            if i < c.layers - 1:
                x = locked_dropout(x, c.dropout_hidden, self.training)
        x = locked_dropout(x, c.dropout, self.training)
        if self.projection is not None:
            x = self.projection(x)
        return x, new_state

    # ------------------------------------------------------------------ output layer

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (nats) of targets (T, B) given features (T, B, D)."""
        flat = features.reshape(-1, features.size(-1))
        targets = targets.reshape(-1)
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            return self.decoder(flat, targets).loss
        return F.cross_entropy(self.decoder(flat), targets)

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Full log-distribution over the vocabulary: (..., D) -> (..., V)."""
        flat = features.reshape(-1, features.size(-1))
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            out = self.decoder.log_prob(flat)
        else:
            out = F.log_softmax(self.decoder(flat), dim=-1)
        return out.reshape(*features.shape[:-1], -1)


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) but keep the values."""
    return [(h.detach(), c.detach()) for h, c in state]
