"""How far a long loop has come, for whoever watches it: a bar in a terminal, and in a log
or a pipe (where a bar would be noise) a plain timestamped line every ``INTERVAL``
seconds with the same facts: the time elapsed, where the loop is, tokens/s, the loss when
there is one, and when this part and the whole run should end.

    [2026-12-01 10:15:30] train epoch 2/8: 43% (step 400, 893,440 of 2,088,628 tokens),
    1m 20s elapsed, 11,168 tokens/s, loss 5.123, ETA epoch 1m 47s, run 17m 20s

The training loop (lstmlm.train.trainer) and the evaluate stage's long parts (the neural
cache's grid, dynamic evaluation: lstmlm.evaluate.adaptation) report through it: they
call ``advance`` as they go, and never decide what is shown.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

# Seconds between two lines written to a log or a pipe.
INTERVAL = 30.0


def stamp(wall: float | None = None) -> str:
    """A line's timestamp: the local date and time ``wall`` (default now)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def duration(seconds: float) -> str:
    """'42s', '3m 05s', '1h 02m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


class Reporter:
    """The progress of one part of a run: ``total`` tokens, of which ``advance`` counts
    those done. ``run``: (tokens of the run done before this part, tokens of the whole
    run), for the run's estimate; ``part`` names this part in the estimate ("epoch").
    ``clock`` (seconds, monotonic) times everything, the timestamps included, so that a
    test can drive it without waiting; ``out`` is where it writes (default stderr), as a
    bar when that is a terminal."""

    def __init__(self, what: str, total: int, *, run: tuple[int, int] | None = None,
                 part: str = "", out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = INTERVAL):
        self.what, self.total, self.run, self.part = what, max(1, total), run, part
        self.out = sys.stderr if out is None else out
        self.clock, self.interval = clock, interval
        self.done = self.steps = 0
        self.facts: dict[str, float] = {}
        self.started = self.last = clock()
        self.wall_started = time.time()
        self.bar = self._bar() if _is_terminal(self.out) else None

    def _bar(self):
        from tqdm import tqdm

        return tqdm(total=self.total, desc=self.what, unit="tok", unit_scale=True,
                    leave=False, mininterval=1.0, file=self.out, dynamic_ncols=True)

    def advance(self, tokens: int, **facts: float) -> None:
        """``tokens`` more done (one step); ``facts`` such as loss=5.1 replace older ones."""
        self.done += tokens
        self.steps += 1
        self.facts.update(facts)
        if self.bar is not None:
            self.bar.update(tokens)
            if facts or self.steps % 50 == 0:
                self.bar.set_postfix(self._postfix(), refresh=False)
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            print(self.line(now), file=self.out, flush=True)

    def rate(self, now: float) -> float:
        """Tokens per second so far."""
        return self.done / max(now - self.started, 1e-9)

    def estimates(self, now: float) -> tuple[float, float | None]:
        """Seconds left of this part and of the run (None without a run) at this rate."""
        rate = max(self.rate(now), 1e-9)
        left = (self.total - self.done) / rate
        if self.run is None:
            return left, None
        before, whole = self.run
        return left, (whole - before - self.done) / rate

    def line(self, now: float) -> str:
        """The line a log gets: when, where, how fast, and how long still."""
        left, run_left = self.estimates(now)
        facts = "".join(f", {name} {value:.3f}" for name, value in self.facts.items())
        eta = f"ETA {self.part + ' ' if self.part else ''}{duration(left)}"
        if run_left is not None:
            eta += f", run {duration(run_left)}"
        when = stamp(self.wall_started + now - self.started)
        return (f"[{when}] {self.what}: {100 * self.done // self.total}% (step "
                f"{self.steps:,}, {self.done:,} of {self.total:,} tokens), "
                f"{duration(now - self.started)} elapsed, {self.rate(now):,.0f} tokens/s"
                f"{facts}, {eta}")

    def _postfix(self) -> dict[str, Any]:
        shown: dict[str, Any] = {name: f"{value:.3f}" for name, value in self.facts.items()}
        run_left = self.estimates(self.clock())[1]
        if run_left is not None:
            shown["run ETA"] = duration(run_left)
        return shown

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False
