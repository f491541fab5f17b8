"""The model and the training loop on tiny fixtures."""

from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_MODEL, TINY_TRAIN
from lstmlm.core.checkpoint import CheckpointError, save_checkpoint
from lstmlm.core.loading import load
from lstmlm.core.machine import cpu_has_bf16
from lstmlm.core.params import parse_section
from lstmlm.data.streams import batchify
from lstmlm.evaluate.perplexity import evaluate_loss
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel
from lstmlm.train.memory import parameter_count
from lstmlm.train.schedule import TrainConfig
from lstmlm.train.trainer import Trainer, TrainingDiverged

torch.set_num_threads(1)


def tiny_model(vocab_size=60, **overrides):
    return LSTMLanguageModel(parse_section("model", {**TINY_MODEL, **overrides}, ModelConfig),
                             vocab_size)


def make_trainer(tiny_data, model_overrides=None, **train_overrides):
    vocab, train_ids, valid_ids = tiny_data
    config = parse_section("train", {**TINY_TRAIN, **train_overrides}, TrainConfig)
    torch.manual_seed(config.seed)
    model = tiny_model(len(vocab), **(model_overrides or {}))
    return Trainer(model, train_ids, valid_ids, config, torch.device("cpu"), reporter=None)


def test_batchify_lays_out_contiguous_streams():
    data = batchify(np.arange(26), 4)
    assert data.shape == (6, 4)
    assert data[:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # column = one contiguous stream
    assert data[0].tolist() == [0, 6, 12, 18]
    with pytest.raises(ValueError, match="too short"):
        batchify(np.arange(5), 4)


@pytest.mark.parametrize("output, tie", [("adaptive", False), ("adaptive", True),
                                         ("full", False), ("full", True)])
def test_shapes_and_proper_distributions(output, tie):
    model = tiny_model(output=output, tie_weights=tie, emb=12, hidden=20, div_value=2.0)
    model.eval()
    ids = torch.randint(0, 60, (7, 3))
    features, state = model(ids)[:2]
    assert features.shape == (7, 3, 12 if tie else 20)
    assert len(state) == 2 and state[0][0].shape == (1, 3, 20)
    log_probs = model.log_probs(features)
    assert log_probs.shape == (7, 3, 60)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(7, 3), atol=1e-5)
    # The training loss is the mean NLL of the same distribution.
    targets = torch.randint(0, 60, (7, 3))
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    assert torch.allclose(model.loss(features, targets), nll, atol=1e-5)
    if tie and output == "full":
        assert model.decoder.weight is model.encoder.weight
    if tie and output == "adaptive":  # the input embedding is the softmax's weights
        assert model.encoder is None


def test_adaptive_input_reads_each_words_vectors_from_its_softmax_cluster():
    """Tied adaptive input (Baevski & Auli 2019): a head word's vector is its head row;
    a tail word's is its cluster row mapped back by the transposed projection."""
    model = tiny_model(tie_weights=True, emb=16, hidden=24, cutoffs=[20, 40], div_value=2.0)
    head, (proj1, words1), (proj2, words2) = (model.decoder.head, *model.decoder.tail)
    assert (proj1.weight.shape, words1.weight.shape) == ((8, 16), (20, 8))
    assert (proj2.weight.shape, words2.weight.shape) == ((4, 16), (20, 4))
    ids = torch.tensor([[3, 19], [20, 39], [40, 59]])  # the edges of the three bands
    vectors = model.embed(ids)
    assert vectors.shape == (3, 2, 16)
    expected = torch.stack([
        torch.stack([head.weight[3], head.weight[19]]),
        torch.stack([words1.weight[0] @ proj1.weight, words1.weight[19] @ proj1.weight]),
        torch.stack([words2.weight[0] @ proj2.weight, words2.weight[19] @ proj2.weight])])
    assert torch.allclose(vectors, expected)
    # Gradients reach exactly the rows that were read, and nothing else.
    model.embed(torch.tensor([[45]])).sum().backward()
    touched = words2.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert touched == [5] and words1.weight.grad is None and head.weight.grad is None
    assert proj2.weight.grad.abs().sum() > 0
    # No separate table: the count the memory check uses, and less than untied.
    n = sum(p.numel() for p in model.parameters())
    assert n == parameter_count(model.config, 60)
    untied = tiny_model(emb=16, hidden=24, cutoffs=[20, 40], div_value=2.0)
    assert n < sum(p.numel() for p in untied.parameters()) - 60 * 16 / 2


@pytest.mark.parametrize("init", ["seed", "torch"])
def test_forget_gate_bias_sets_the_f_gate_and_nothing_else(init):
    model = tiny_model(init=init, forget_gate_bias=1.0)
    for lstm in model.lstms:
        total = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
        i, f, g, o = total.chunk(4)
        assert torch.equal(f, torch.ones(24))
        if init == "seed":
            assert torch.count_nonzero(torch.cat([i, g, o])) == 0
    assert torch.count_nonzero(tiny_model(forget_gate_bias=0.0).lstms[0].bias_ih_l0) == 0


def test_seed_initialisation():
    model = tiny_model()
    lstm = model.lstms[0]
    assert torch.count_nonzero(lstm.bias_ih_l0) == 0 and torch.count_nonzero(lstm.bias_hh_l0) == 0
    gate = lstm.weight_hh_l0[:24]  # one gate's (hidden, hidden) block is orthogonal
    assert torch.allclose(gate @ gate.T, torch.eye(24), atol=1e-5)


def test_weight_drop_changes_outputs_in_training_only_and_trains_raw_weights():
    model = tiny_model(weight_dropout=0.5, output_dropout=0, input_dropout=0, layer_dropout=0)
    ids = torch.randint(0, 60, (5, 2))
    model.train()
    a, b = model(ids).features, model(ids).features
    assert not torch.allclose(a, b)
    model.loss(a, ids).backward()
    assert model.lstms[0].weight_hh_l0.grad is not None
    model.eval()
    assert torch.equal(model(ids)[0], model(ids)[0])


def test_loss_falls_on_a_tiny_corpus(tiny_data):
    trainer = make_trainer(tiny_data, epochs=3)
    before = trainer.validate()
    history = trainer.fit()
    assert len(history) == 3
    assert history[-1].valid_loss < before - 0.5
    assert history[-1].train_loss < history[0].train_loss


def test_max_tokens_trains_on_the_first_tokens_of_train_only(tiny_data):
    _, train_ids, _ = tiny_data
    whole = make_trainer(tiny_data, epochs=1)
    head = make_trainer(tiny_data, epochs=1, max_tokens=403)
    assert head.train_data.shape == (403 // 4, 4)
    assert head.train_data.t().reshape(-1).tolist() == train_ids[:400].tolist()
    assert whole.train_data.numel() == len(train_ids) // 4 * 4
    assert head.fit()[-1].tokens_per_s > 0 and head.progress.steps < whole.train_data.size(0)


def test_stateful_and_reset_training_differ(tiny_data):
    stateful = make_trainer(tiny_data, epochs=1, stateful=True).fit()[-1]
    reset = make_trainer(tiny_data, epochs=1, stateful=False).fit()[-1]
    assert stateful.train_loss != reset.train_loss


def test_evaluation_carries_state_across_batches(tiny_data):
    trainer = make_trainer(tiny_data, epochs=1)
    trainer.fit()
    data = trainer.valid_data
    carried = evaluate_loss(trainer.model, data, bptt=4)
    # Resetting the state every 4 steps throws context away: the loss must be worse.
    reset = np.mean([evaluate_loss(trainer.model, data[i:i + 5], bptt=4)
                     for i in range(0, data.size(0) - 5, 4)])
    assert carried < reset


def test_reruns_are_bit_identical(tiny_data):
    first = [asdict(r) for r in make_trainer(tiny_data, variable_bptt=True).fit()]
    second = [asdict(r) for r in make_trainer(tiny_data, variable_bptt=True).fit()]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "epoch_seconds")}
                        for r in rs]
    assert strip(first) == strip(second)


def test_resume_state_continues_bit_identically(tiny_data):
    straight = make_trainer(tiny_data, epochs=3, variable_bptt=True).fit()
    interrupted = make_trainer(tiny_data, epochs=3, variable_bptt=True)
    saved = []

    def save_then_stop(record, is_best):  # what the stage does after an epoch, then a kill
        saved.append(interrupted.state_dict())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(save_then_stop)
    state = saved[0]
    resumed = make_trainer(tiny_data, epochs=3, variable_bptt=True)
    resumed.load_state_dict(state)
    history = resumed.fit()
    assert [r.valid_loss for r in history] == [r.valid_loss for r in straight]


def test_divergence_stops_with_a_clear_message(tiny_data):
    trainer = make_trainer(tiny_data, epochs=1)
    with torch.no_grad():
        trainer.model.encoder.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="learning rate"):
        trainer.fit()


@pytest.mark.parametrize("tie", [False, True])
def test_checkpoint_round_trip_loads_weights_only(tiny_data, tmp_path, tie):
    vocab = tiny_data[0]
    model = tiny_model(len(vocab), tie_weights=tie)
    save_checkpoint(tmp_path / "m.pt", model, vocab, {"epoch": 3})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # no pickled code inside
    assert payload["vocab"]["sha256"] == vocab.sha256
    assert payload["model_config"]["hidden"] == TINY_MODEL["hidden"]
    vocab.save(tmp_path / "v.json")
    loaded, loaded_vocab, info = load(tmp_path / "m.pt", tmp_path / "v.json")
    assert loaded_vocab == vocab and info == {"epoch": 3}
    assert model.state_dict().keys() == loaded.state_dict().keys()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.randint(0, len(vocab), (6, 2))
    assert torch.equal(model.eval()(ids).features, loaded.eval()(ids).features)


def test_checkpoint_errors_are_clear(tiny_data, tmp_path):
    vocab = tiny_data[0]
    model = tiny_model(len(vocab))
    save_checkpoint(tmp_path / "m.pt", model, vocab)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="perhaps truncated"):
        load(tmp_path / "cut.pt")
    other = type(vocab)(vocab.words[::-1], vocab.counts[::-1], vocab.scheme)
    other.save(tmp_path / "other.json")
    with pytest.raises(CheckpointError, match="trained with another vocabulary"):
        load(tmp_path / "m.pt", tmp_path / "other.json")
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "missing.pt")


def test_cosine_schedule_decays_to_the_floor_and_plateau_cuts_on_a_worse_epoch(tiny_data):
    from lstmlm.train.schedule import COSINE_FLOOR, get_lr

    cosine = make_trainer(tiny_data, epochs=2, schedule="cosine").fit()
    assert cosine[0].lr == pytest.approx(TINY_TRAIN["lr"])
    # Half-way through the planned epochs the rate is half-way down the cosine.
    assert cosine[1].lr == pytest.approx(TINY_TRAIN["lr"] * (COSINE_FLOOR + (1 - COSINE_FLOOR) / 2))
    config = parse_section("train", {**TINY_TRAIN, "epochs": 2}, TrainConfig)
    assert get_lr(config, 2.0) == pytest.approx(TINY_TRAIN["lr"] * COSINE_FLOOR)
    assert get_lr(config, 5.0) == get_lr(config, 2.0)
    plateau = make_trainer(tiny_data, epochs=1, schedule="plateau", lr_patience=0, lr_factor=0.5)
    plateau.fit()
    assert plateau.progress.plateau_cuts == 0  # it improved: no cut
    plateau.end_epoch(plateau.progress.best_valid_loss + 1.0)  # a worse epoch: the rate halves
    assert plateau.progress.plateau_cuts == 1
    assert get_lr(plateau.config, plateau.progress.epoch, 1) == pytest.approx(TINY_TRAIN["lr"] / 2)


def test_checkpoint_without_its_vocabulary_reference_is_rejected(tiny_data, tmp_path):
    vocab = tiny_data[0]
    save_checkpoint(tmp_path / "m.pt", tiny_model(len(vocab)), vocab)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["vocab"]["sha256"]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="lacks its vocabulary reference"):
        load(tmp_path / "bad.pt")


# --------------------------------------------------------------------------- precision


def test_loss_and_validation_are_fp32_whatever_the_autocast_setting(tiny_data):
    trainer = make_trainer(tiny_data, epochs=1)
    model = trainer.model.eval()
    ids = trainer.valid_data[:9]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids[:-1])
        loss = model.loss(low.features, ids[1:])
        target = model.target_log_probs(low.features, ids[1:])
        valid = trainer.validate()
    # On a CPU with bfloat16 instructions the LSTMs follow autocast; without, they run fp32.
    assert low.top.dtype == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert loss.dtype == torch.float32 and target.dtype == torch.float32
    assert valid == trainer.validate()  # validation ignores an enclosing autocast
    # The output layer ran in fp32 on the same features (bf16 logits would be ~1e-2 off).
    assert torch.allclose(loss, model.loss(low.features.float(), ids[1:]), atol=1e-6)


@pytest.mark.parametrize("precision", ["tf32", "fp32", "bf16", "bf16-all"])
def test_a_training_step_keeps_loss_and_gradients_in_fp32(tiny_data, precision):
    from lstmlm.core.machine import set_precision

    set_precision(precision)
    trainer = make_trainer(tiny_data, epochs=1, precision=precision)
    inputs, targets = trainer.train_data[:8], trainer.train_data[1:9]
    loss, state = trainer.train_step(inputs, targets, trainer.model.init_state(inputs.size(1)),
                                     0.01)
    assert loss.dtype == torch.float32
    assert all(p.grad.dtype == torch.float32 for p in trainer.model.parameters()
               if p.grad is not None)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    # bf16: the LSTMs ran in bfloat16 where the CPU has bfloat16 instructions (their state
    # comes out so); otherwise fp32 throughout.
    low = torch.bfloat16 if precision.startswith("bf16") and cpu_has_bf16() else torch.float32
    assert all(h.dtype == low and c.dtype == low for h, c in state)
    set_precision("tf32")


# The output layer with its products in bf16 (precision bf16-all): a model whose features
# make every cluster of the adaptive softmax likely, targets in each band.
def output_layer_case(output: str):
    torch.manual_seed(0)
    model = LSTMLanguageModel(ModelConfig(emb=32, hidden=48, layers=1, output=output,
                                          tie_weights=False, cutoffs=[20, 60]), 200)
    features = torch.randn(35, 8, 48, requires_grad=True)
    targets = torch.cat([torch.randint(lo, hi, (35 * 8 // 4,)) for lo, hi in
                         ((0, 20), (0, 20), (20, 60), (60, 200))]).view(35, 8)
    return model, features, targets


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_the_bf16_output_layer_loss_matches_fp32(output):
    """Products in bf16, log-softmax and loss in fp32: the loss within 1e-3 relative of
    the fp32 one (measured: about 1e-5), and fp32 gives torch's own numbers to the bit."""
    model, features, targets = output_layer_case(output)
    fp32 = model.loss(features, targets)
    bf16 = model.loss(features, targets, bf16=True)
    assert fp32.dtype == bf16.dtype == torch.float32
    assert bf16.item() == pytest.approx(fp32.item(), rel=1e-3)
    assert bf16.item() != fp32.item()  # the products really ran in bf16
    flat = features.reshape(-1, 48)
    if output == "adaptive":
        assert torch.equal(fp32, model.decoder(flat, targets.reshape(-1)).loss)
    else:
        assert torch.equal(fp32, F.cross_entropy(model.decoder(flat), targets.reshape(-1)))


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_the_bf16_output_layer_passes_gradients_to_every_weight(output):
    model, features, targets = output_layer_case(output)
    model.loss(features, targets, bf16=True).backward()
    grads = {name: p.grad for name, p in model.decoder.named_parameters()}
    grads["features"] = features.grad
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all()
               and g.abs().sum() > 0 for g in grads.values()), {
        name: None if g is None else float(g.abs().sum()) for name, g in grads.items()}
    if output == "adaptive":  # the head and both clusters' two products
        assert len(grads) == 6


def test_auto_precision_is_bf16_only_on_a_cpu_with_bfloat16_instructions(monkeypatch):
    from lstmlm.core.machine import resolve_precision

    for amx, avx512_bf16, expected in ((True, True, "bf16"), (False, True, "bf16"),
                                       (False, False, "tf32")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        assert resolve_precision("auto", torch.device("cpu")) == expected
        assert resolve_precision("auto", torch.device("cuda")) == "tf32"
        assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


def test_bf16_training_learns_and_validates_in_fp32(tiny_data):
    """A bf16 run ends close to the fp32 one: same data, seed and steps."""
    finals = {}
    for precision in ("fp32", "bf16"):
        trainer = make_trainer(tiny_data, epochs=3, precision=precision)
        history = trainer.fit()
        assert history[-1].valid_loss < history[0].valid_loss
        finals[precision] = history[-1].valid_loss
    assert finals["bf16"] == pytest.approx(finals["fp32"], rel=0.03)


# --------------------------------------------------------------------------- AR/TAR, NT-ASGD


def test_ar_and_tar_add_their_defined_penalties_to_the_objective():
    from lstmlm.train.trainer import LossForward, activation_penalty

    model = tiny_model(output_dropout=0.5)
    # Large weights: a tiny model's activations are small, and the penalty must stand
    # well above fp32 rounding of the loss.
    config = parse_section("train", {**TINY_TRAIN, "activation_reg": 2000.0,
                                     "temporal_activation_reg": 1000.0}, TrainConfig)
    ids = torch.randint(0, 60, (6, 3))
    torch.manual_seed(0)
    out = model(ids)
    expected = (2000.0 * out.top_dropped.pow(2).mean()
                + 1000.0 * (out.top[1:] - out.top[:-1]).pow(2).mean())
    assert torch.allclose(activation_penalty(out, config), expected)
    assert not torch.equal(out.top, out.top_dropped)  # AR reads the dropped output
    torch.manual_seed(0)
    loss, objective, _ = LossForward(model, config, "fp32")(ids, ids, None)
    assert torch.allclose(objective - loss, expected, rtol=1e-4)
    off = parse_section("train", TINY_TRAIN, TrainConfig)
    assert activation_penalty(out, off) == 0.0


def test_ntasgd_trigger_follows_merity_et_al():
    from lstmlm.train.schedule import should_start_averaging

    # The newest loss is worse than the best of those more than `nonmono` epochs before it.
    assert not should_start_averaging([5.0, 4.0, 3.0, 2.0], nonmono=2)
    assert not should_start_averaging([5.0, 4.0, 4.5], nonmono=2)  # too few epochs
    assert should_start_averaging([5.0, 4.0, 4.2, 4.3, 4.1], nonmono=2)
    assert not should_start_averaging([5.0, 4.0, 4.2, 4.3, 3.9], nonmono=2)


def test_ntasgd_switches_after_nonmono_epochs_and_saves_and_evaluates_the_average(tiny_data):
    trainer = make_trainer(tiny_data, epochs=6, optimizer="sgd", lr=0.5, schedule="constant",
                           averaging="ntasgd", nonmono=2, early_stop_patience=6)
    for loss in (5.0, 4.0, 4.2, 4.3):  # no new best for nonmono epochs...
        trainer.end_epoch(loss)
        assert trainer.average is None
    trainer.end_epoch(4.1)  # ...and worse than the best before them: switch
    assert trainer.progress.averaging and trainer.average is not None
    # From now on every step updates a uniform average of the weights after each step.
    snapshots = []
    state = trainer.model.init_state(trainer.train_data.size(1))
    for i in (0, 8):
        inputs, targets = trainer.train_data[i:i + 8], trainer.train_data[i + 1:i + 9]
        _, state = trainer.train_step(inputs, targets, state, 0.5)
        snapshots.append(trainer.model.encoder.weight.detach().clone())
    averaged = trainer.eval_model.encoder.weight
    assert torch.allclose(averaged, (snapshots[0] + snapshots[1]) / 2, atol=1e-6)
    assert not torch.allclose(averaged, trainer.model.encoder.weight)
    # Validation reads the average; a new best saves the average's weights.
    assert trainer.validate() == evaluate_loss(trainer.average.module, trainer.valid_data,
                                               trainer.config.bptt)
    trainer.progress.best_valid_loss = float("inf")
    trainer.end_epoch(trainer.validate())
    assert torch.equal(trainer.progress.best_weights["encoder.weight"], averaged.detach())


def test_swa_averages_every_step_from_its_share_of_the_epochs_on(tiny_data):
    trainer = make_trainer(tiny_data, epochs=4, averaging="swa", average_from=0.5,
                           early_stop_patience=10)
    step, snapshots, steps_at_start = trainer.train_step, [], []

    def recording_step(*args):
        out = step(*args)
        if trainer.average is not None:
            snapshots.append(trainer.model.encoder.weight.detach().clone())
        return out

    trainer.train_step = recording_step
    on_epoch = lambda record, best: steps_at_start.append(trainer.progress.steps)  # noqa: E731
    trainer.fit(on_epoch)
    # Epochs 3 and 4 (the second half), every step and only those.
    assert len(snapshots) == steps_at_start[3] - steps_at_start[1] > 0
    assert int(trainer.average.n_averaged) == len(snapshots)
    assert torch.allclose(trainer.eval_model.encoder.weight, torch.stack(snapshots).mean(0),
                          atol=1e-6)


def test_the_foreach_average_is_torchs_average(tiny_data):
    """UniformAverage (one foreach lerp) against torch's AveragedModel: the same average
    to float32 rounding, the same state_dict, so resume states load either way."""
    from torch.optim.swa_utils import AveragedModel

    from lstmlm.train.averaging import UniformAverage

    model = make_trainer(tiny_data, epochs=1).model
    ours, torchs = UniformAverage(model, use_buffers=True), AveragedModel(model, use_buffers=True)
    for _ in range(4):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        ours.update_parameters(model)
        torchs.update_parameters(model)
    assert ours.state_dict().keys() == torchs.state_dict().keys()
    for name, value in ours.state_dict().items():
        assert torch.allclose(value, torchs.state_dict()[name], atol=1e-6), name
    assert int(ours.n_averaged) == 4


def test_ntasgd_resumes_with_its_average(tiny_data):
    trainer = make_trainer(tiny_data, epochs=2, optimizer="sgd", lr=0.5, averaging="ntasgd")
    trainer.start_averaging()
    trainer.progress.averaging = True
    trainer.fit()
    resumed = make_trainer(tiny_data, epochs=2, optimizer="sgd", lr=0.5, averaging="ntasgd")
    resumed.load_state_dict(trainer.state_dict())
    assert torch.equal(resumed.eval_model.encoder.weight, trainer.eval_model.encoder.weight)


def test_validate_every_keeps_a_best_found_mid_epoch(tiny_data):
    trainer = make_trainer(tiny_data, epochs=1, validate_every=5)
    found = []
    trainer.on_best = lambda loss: found.append((trainer.progress.steps, loss))
    trainer.fit()
    assert found and all(steps % 5 == 0 for steps, _ in found)
    losses = [loss for _, loss in found]
    assert losses == sorted(losses, reverse=True)  # each one a new best
    assert trainer.progress.best_valid_loss <= losses[-1]
    assert trainer.progress.epochs_since_best == 0  # a mid-epoch best counts as improving
