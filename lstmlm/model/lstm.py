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

import functools
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lstmlm.core.machine import cpu_has_bf16
from lstmlm.model.config import ModelConfig

State = list[tuple[torch.Tensor, torch.Tensor]]


class Output(NamedTuple):
    features: torch.Tensor   # (T, B, out_dim): what the output layer reads
    state: State             # the LSTMs' final (h, c), to carry into the next batch
    top: torch.Tensor        # (T, B, hidden): the top LSTM's output, before its dropout
    top_dropped: torch.Tensor  # the same after output_dropout


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with one mask per sequence: x (T, B, D), mask (1, B, D) shared over T."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)
    return x * mask


def word_dropout(x: torch.Tensor, ids: torch.Tensor, vocab_size: int, p: float,
                 training: bool) -> torch.Tensor:
    """Drop whole words: every occurrence of a dropped word in the batch is zeroed.

    x (T, B, D) holds the embeddings of ids (T, B). One mask entry per vocabulary row,
    applied as ``mask[ids]``: the same result as masking a copy of the whole V x D
    table, without writing that copy every step."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(vocab_size, 1).bernoulli_(1 - p) / (1 - p)
    return x * mask[ids]


def adaptive_input(softmax: nn.AdaptiveLogSoftmaxWithLoss, ids: torch.Tensor) -> torch.Tensor:
    """Adaptive input embeddings (Baevski & Auli 2019) tied to an adaptive softmax:
    ids (...) -> (..., D), built from the softmax's own weights.

    A frequent word (the head, ids below cutoffs[0]) is its row of the head's D-wide
    output matrix. A word of tail cluster k is its row of that cluster's narrow output
    matrix (width D / div_value^(k+1)), mapped back to D by the transpose of the
    cluster's D -> narrow projection. Rare words thus get few parameters, and every
    word's input and output vectors are one set of weights."""
    flat = ids.reshape(-1)
    out = softmax.head.weight.new_zeros(flat.numel(), softmax.in_features)
    bounds = [0, *softmax.cutoffs]  # softmax.cutoffs ends with the vocabulary size
    for band, (low, high) in enumerate(zip(bounds, bounds[1:])):
        rows = ((flat >= low) & (flat < high)).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        if band == 0:
            vectors = F.embedding(flat[rows], softmax.head.weight)
        else:
            project, words = softmax.tail[band - 1]  # D -> narrow, narrow -> cluster words
            vectors = F.embedding(flat[rows] - low, words.weight) @ project.weight
        # In the softmax weights' dtype, whatever autocast made of the product: CUDA's
        # index_copy refuses a bf16 source for an fp32 destination (CPU autocast promotes).
        out = out.index_copy(0, rows, vectors.to(out.dtype))
    return out.reshape(*ids.shape, -1)


def _in_fp32(method):
    """Run an output-layer method on fp32 features with autocast switched off, unless it
    is asked for bf16 products (``bf16=True``): then they run under bf16 autocast and only
    the log-softmax and what follows are fp32."""
    @functools.wraps(method)
    def wrapper(self, features: torch.Tensor, *args, bf16: bool = False):
        device = features.device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            return method(self, features if bf16 else features.float(), *args)
    return wrapper


def adaptive_target_log_probs(softmax: nn.AdaptiveLogSoftmaxWithLoss, flat: torch.Tensor,
                              targets: torch.Tensor) -> torch.Tensor:
    """log p(target) of each row of features flat (N, D), targets (N,): what
    nn.AdaptiveLogSoftmaxWithLoss(flat, targets).output computes, op for op (so fp32 gives
    the same bits), with each product's result made fp32 before its log-softmax: the
    products may run in bf16 under autocast, the normalisation never does."""
    output = flat.new_zeros(targets.size(0), dtype=torch.float32)
    gather = targets.new_empty(targets.size(0))
    bounds = [0, *softmax.cutoffs]
    for i, (low, high) in enumerate(zip(bounds, bounds[1:])):
        mask = (targets >= low) & (targets < high)
        rows = mask.nonzero().squeeze()
        if rows.numel() == 0:
            continue
        if i == 0:
            gather.index_copy_(0, rows, targets[mask])
            continue
        logits = softmax.tail[i - 1](flat.index_select(0, rows)).float()
        gather.index_fill_(0, rows, softmax.shortlist_size + i - 1)
        local = F.log_softmax(logits, dim=1).gather(1, (targets[mask] - low).unsqueeze(1))
        output.index_copy_(0, rows, local.squeeze(1))
    head = F.log_softmax(softmax.head(flat).float(), dim=1)
    return output + head.gather(1, gather.unsqueeze(1)).squeeze(1)


class LSTMLanguageModel(nn.Module):
    """Word-level LSTM language model (see the module docstring for layouts)."""

    def __init__(self, config: ModelConfig, vocab_size: int, *, init_weights: bool = True):
        """``init_weights=False`` skips the configured initialisation, for a model whose
        weights are loaded right after (the seed init's orthogonal QRs take seconds)."""
        super().__init__()
        config.check_sized(vocab_size)  # the adaptive softmax's cutoffs are word counts
        self.config, self.vocab_size = config, vocab_size
        c = config
        # With a tied adaptive softmax the input embedding is the softmax's own weights
        # (``adaptive_input``), so there is no separate table.
        self.encoder = None if c.tied_adaptive else nn.Embedding(vocab_size, c.emb)
        self.lstms = nn.ModuleList(
            nn.LSTM(c.emb if i == 0 else c.hidden, c.hidden) for i in range(c.layers))
        # Tying needs features of width emb: project the top layer when hidden != emb.
        self.projection = (nn.Linear(c.hidden, c.emb, bias=False)
                           if c.tie_weights and c.hidden != c.emb else None)
        if c.output == "full":
            self.decoder = nn.Linear(c.out_dim, vocab_size)
            if c.tie_weights:
                self.decoder.weight = self.encoder.weight
        else:
            # Relies on ids sorted by frequency: [0, cutoffs[0]) is the head.
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(
                c.out_dim, vocab_size, list(c.cutoffs), div_value=c.div_value)
        if init_weights:
            if c.init == "seed":
                self._init_like_seed()
            if c.forget_gate_bias:
                self._init_forget_gate_bias()

    def _init_like_seed(self) -> None:
        """Xavier for input-to-hidden, orthogonal for hidden-to-hidden, zero biases."""
        if self.encoder is not None:
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

    @torch.no_grad()
    def _init_forget_gate_bias(self) -> None:
        """The forget gate's total bias (bias_ih + bias_hh, gate order i, f, g, o) set to
        model.forget_gate_bias, so that new cells start out keeping their memory."""
        for lstm in self.lstms:
            h = self.config.hidden
            lstm.bias_ih_l0[h:2 * h].fill_(self.config.forget_gate_bias)
            lstm.bias_hh_l0[h:2 * h].zero_()

    # ------------------------------------------------------------------ recurrence

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (T, B) -> embeddings (T, B, emb), before any dropout."""
        if self.encoder is None:
            return adaptive_input(self.decoder, ids)
        return self.encoder(ids)

    def init_state(self, batch_size: int) -> State:
        """Zero (h, c) for every layer, on the model's device."""
        weight = self.lstms[0].weight_hh_l0
        return [(weight.new_zeros(1, batch_size, self.config.hidden),
                 weight.new_zeros(1, batch_size, self.config.hidden))
                for _ in range(self.config.layers)]

    def _run_lstm(self, lstm: nn.LSTM, x: torch.Tensor, state) -> tuple[torch.Tensor, Any]:
        # On CUDA the recurrence runs in fp32 (TF32) whatever autocast surrounds it: under
        # CUDA autocast cuDNN's LSTM runs in fp16 (even when bf16 was asked for) and, with
        # no gradient scaling, loses the small gradients of a mean over thousands of
        # tokens. On a CPU with bfloat16 instructions, bf16 autocast runs oneDNN's LSTM in
        # bfloat16 (fp32 weights); a CPU without them (AVX2 only) has no bf16 LSTM
        # primitive at all, so there it runs in fp32 too.
        device = x.device.type
        if device == "cuda" or (torch.is_autocast_enabled(device) and not cpu_has_bf16()):
            with torch.autocast(device, enabled=False):
                return self._recur(lstm, x.float(), state)
        return self._recur(lstm, x, state)

    def _recur(self, lstm: nn.LSTM, x: torch.Tensor, state) -> tuple[torch.Tensor, Any]:
        """One LSTM over the sequence, with DropConnect on its recurrent weights."""
        p = self.config.weight_dropout
        if not self.training or p == 0.0:
            return lstm(x, state)
        # DropConnect: one mask over the recurrent weights for the whole sequence.
        dropped = F.dropout(lstm.weight_hh_l0, p=p, training=True)
        return torch.func.functional_call(lstm, {"weight_hh_l0": dropped}, (x, state),
                                          strict=False)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> Output:
        """ids (T, B) -> features (T, B, out_dim), the new state, and the top layer's
        output before and after its dropout (for activation regularisation)."""
        c = self.config
        if state is None:
            state = self.init_state(ids.size(1))
        x = word_dropout(self.embed(ids), ids, self.vocab_size, c.word_dropout, self.training)
        x = locked_dropout(x, c.input_dropout, self.training)
        new_state: State = []
        for i, lstm in enumerate(self.lstms):
            x, layer_state = self._run_lstm(lstm, x, state[i])
            new_state.append(layer_state)
            if i < c.layers - 1:
                x = locked_dropout(x, c.layer_dropout, self.training)
        top = x
        x = locked_dropout(top, c.output_dropout, self.training)
        dropped = x
        if self.projection is not None:
            x = self.projection(x)
        return Output(x, new_state, top, dropped)

    # ------------------------------------------------------------------ output layer

    # The output layer's log-softmax and loss always run in fp32, outside any autocast
    # region (``_in_fp32``): a loss of ~5 nats in bf16 keeps two significant digits, and
    # validation picks the checkpoint on it. Its matrix products may run in bf16 when the
    # caller asks (``bf16=True``: training with precision bf16-all).

    @_in_fp32
    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (nats, fp32) of targets (T, B) given features
        (T, B, D)."""
        flat, targets = features.reshape(-1, features.size(-1)), targets.reshape(-1)
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            return -adaptive_target_log_probs(self.decoder, flat, targets).mean()
        return F.cross_entropy(self.decoder(flat).float(), targets)

    @_in_fp32
    def target_log_probs(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) per position, (T, B), fp32; with an adaptive softmax only the
        target's cluster is computed, never the full distribution."""
        flat = features.reshape(-1, features.size(-1))
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            out = adaptive_target_log_probs(self.decoder, flat, targets.reshape(-1))
        else:
            out = -F.cross_entropy(self.decoder(flat).float(), targets.reshape(-1),
                                   reduction="none")
        return out.reshape(targets.shape)

    @_in_fp32
    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Full log-distribution over the vocabulary, fp32: (..., D) -> (..., V)."""
        flat = features.reshape(-1, features.size(-1))
        if isinstance(self.decoder, nn.AdaptiveLogSoftmaxWithLoss):
            out = self.decoder.log_prob(flat)
        else:
            out = F.log_softmax(self.decoder(flat), dim=-1)
        return out.reshape(*features.shape[:-1], -1)


def detach_state(state: State) -> State:
    """Cut the graph at a batch boundary (truncated BPTT) but keep the values."""
    return [(h.detach(), c.detach()) for h, c in state]
