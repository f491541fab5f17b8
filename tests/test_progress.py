"""Progress of the long loops: a timestamped line every 30 s into a log or a pipe, a bar in
a terminal, the same facts in both; the trainer and the evaluate stage's long parts report
through it. A fake clock stands in for time: no test sleeps."""

from __future__ import annotations

import io
import re
from datetime import datetime

import torch
from test_adaptation import krause_rule, zipf_stream
from test_adaptation import tiny_model as tiny_adaptation_model
from test_model_training import tiny_model

from conftest import TINY_TRAIN
from lstmlm.core.params import parse_section
from lstmlm.core.progress import INTERVAL, Reporter, duration
from lstmlm.data.streams import batchify
from lstmlm.evaluate.adaptation import adapt_test, adapt_valid
from lstmlm.evaluate.config import EvaluateConfig
from lstmlm.evaluate.perplexity import evaluate_loss
from lstmlm.train.schedule import TrainConfig
from lstmlm.train.trainer import Trainer

LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (?P<what>.+?): (?P<percent>\d+)% "
                  r"\(step (?P<step>[\d,]+), (?P<done>[\d,]+) of (?P<total>[\d,]+) tokens\), "
                  r"(?P<elapsed>\S+(?: \S+)?) elapsed, (?P<rate>[\d,]+) tokens/s(?P<facts>.*), "
                  r"ETA (?P<eta>.+)$")


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Ticking(FakeClock):
    """A clock on which every reading is 31 seconds after the one before."""

    def __call__(self) -> float:
        self.now += 31
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_into_a_log_a_line_every_30_seconds_with_the_facts():
    clock, log = FakeClock(), io.StringIO()
    report = Reporter("train epoch 2/4", 100_000, run=(100_000, 400_000), part="epoch",
                      out=log, clock=clock)
    for step in range(95):  # one step of 1,000 tokens a second
        clock.now += 1.0
        report.advance(1000, **({"loss": 5.0 - step / 100} if step % 20 == 0 else {}))
        assert len(log.getvalue().splitlines()) == (step + 1) // INTERVAL
    lines = log.getvalue().splitlines()
    assert len(lines) == 3  # at 30, 60 and 90 seconds
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    first, last = parsed[0], parsed[-1]
    assert first["what"] == "train epoch 2/4" and first["step"] == "30"
    assert (first["done"], first["total"], first["percent"]) == ("30,000", "100,000", "30")
    assert first["elapsed"] == "30s" and first["rate"] == "1,000"
    assert first["facts"] == ", loss 4.800"  # the newest loss read back
    # 70,000 tokens left of the epoch at 1,000/s; the run has 2 more epochs of 100,000.
    assert first["eta"] == "epoch 1m 10s, run 4m 30s"
    assert last["elapsed"] == "1m 30s" and last["eta"] == "epoch 10s, run 3m 30s"
    stamps = [datetime.fromisoformat(re.match(r"\[(.*?)\]", line)[1]) for line in lines]
    assert [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])] == [30, 30]


def test_a_part_without_a_run_estimates_itself_only():
    clock, log = FakeClock(), io.StringIO()
    report = Reporter("evaluate dynamic on test", 5000, out=log, clock=clock, interval=10)
    clock.now += 10
    report.advance(2000)
    assert LINE.match(log.getvalue().strip())["eta"] == "15s"
    assert [duration(s) for s in (0, 59.6, 61, 3725)] == ["0s", "1m 00s", "1m 01s", "1h 02m"]


def test_in_a_terminal_a_bar_shows_tokens_per_s_loss_and_both_estimates():
    clock, terminal = FakeClock(), Terminal()
    with Reporter("train epoch 1/2", 10_000, run=(0, 20_000), part="epoch", out=terminal,
                  clock=clock) as report:
        clock.now += 31
        report.advance(1000, loss=4.25)
        bar = str(report.bar)
        assert "train epoch 1/2" in bar and "tok/s" in bar and "loss=4.250" in bar
        assert "run ETA=" in bar and "<" in bar  # tqdm's own estimate of the epoch
    assert not re.search(r"^\[\d{4}-", terminal.getvalue(), flags=re.M)  # no log lines


def test_the_trainer_reports_each_epoch_with_its_loss_through_the_callback(tiny_data):
    vocab, train_ids, valid_ids = tiny_data
    log = io.StringIO()

    def reporter(what, total, **kwargs):  # every step takes longer than the interval
        return Reporter(what, total, out=log, clock=Ticking(), **kwargs)

    config = parse_section("train", {**TINY_TRAIN, "epochs": 2}, TrainConfig)
    torch.manual_seed(0)
    trainer = Trainer(tiny_model(len(vocab)), train_ids, valid_ids, config,
                      torch.device("cpu"), reporter=reporter)
    trainer.fit()
    lines = [LINE.match(line) for line in log.getvalue().splitlines()]
    assert lines and all(lines), log.getvalue()
    assert {m["what"] for m in lines} == {"train epoch 1/2", "train epoch 2/2"}
    tokens = (trainer.train_data.size(0) - 1) * trainer.train_data.size(1)
    assert {m["total"] for m in lines} == {f"{tokens:,}"}
    assert all(m["facts"].startswith(", loss ") for m in lines)
    assert "run " in lines[0]["eta"]


def test_the_adapted_parts_report_on_valid_and_test():
    model = tiny_adaptation_model()
    config = EvaluateConfig(bptt=8, cache_window=20, cache_thetas=[0.3, 1.0],
                            cache_lambdas=[0.1, 0.3], dynamic_lr=1e-3, dynamic_segment=8)
    rule = krause_rule(model)
    reports = []

    def progress(what, total):
        reports.append(Reporter(what, total, out=io.StringIO(), clock=FakeClock()))
        return reports[-1]

    data = batchify(zipf_stream(60, 11), 2)
    evaluate_loss(model, data, 8, kept := [])
    _, choices = adapt_valid(model, data, kept, config, rule, lambda line: None, progress)
    evaluate_loss(model, data, 8, kept := [])
    adapt_test(model, data, kept, config, rule, choices, lambda line: None, progress)
    tokens = data[1:].numel()
    assert [(r.what, r.done) for r in reports] == [
        ("evaluate cache grid on valid", tokens), ("evaluate dynamic on valid", tokens),
        ("evaluate dynamic+cache grid on valid", tokens), ("evaluate cache on test", tokens),
        ("evaluate dynamic on test", tokens), ("evaluate dynamic+cache on test", tokens)]
    assert all(r.total == tokens for r in reports)
