"""The sampling settings: the ``sample`` section of params.yaml, the options of
``python -m lstmlm generate``, the controls of ``python -m lstmlm serve`` and the keyword
arguments of ``Generator.generate``, with one set of defaults and one check.

Torch-free, so that the command line checks its options before loading torch.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass
from typing import Any

from lstmlm.core.params import ParamsError, check_fields, spec

# Temperatures other than 0 (greedy) must lie in this range. Outside it float32, not the
# user, decides: at 1e-40 the log-probabilities divided by the temperature overflow and
# every word looks banned, at 1e39 the temperature itself is infinite. Inside it the
# arithmetic is sound, and the ends already draw almost greedily and almost uniformly.
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 1e3
# A seed drawn for a text is below this: short enough to copy.
SEEDS_DRAWN_BELOW = 2**32


@dataclass(frozen=True)
class SamplingOptions:
    """How to draw words: the ``sample`` section of params.yaml, the options of
    ``python -m lstmlm generate`` and the controls of ``serve``, with these defaults.

    ``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 disable those filters;
    ``seed`` None draws a fresh seed; ``allow_unk`` False never emits ``<unk>``;
    ``stop_at_eos`` ends the text at the first ``<eos>`` (which is still returned).
    """

    words: int = spec(40, low=1, doc="tokens to generate, <eos> included")
    temperature: float = spec(0.8, low=0.0, high=MAX_TEMPERATURE,
                              doc=f"0 is greedy; else {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}")
    top_k: int = spec(0, low=0, doc="0 disables")
    top_p: float = spec(0.95, low=0.0, high=1.0, low_open=True, doc="1 disables")
    seed: int | None = spec(0, low=0, high=2**63 - 1, doc="none draws a fresh seed")
    allow_unk: bool = spec(False)
    stop_at_eos: bool = spec(False)

    def __post_init__(self) -> None:
        self._check_temperature()
        check_fields(self, "sample")

    def _check_temperature(self) -> None:
        """The temperature's range, in one message for both ends (types, NaN and negative
        values are check_fields' to refuse)."""
        try:
            value = float(self.temperature)
        except (TypeError, ValueError):
            return
        if 0 < value < MIN_TEMPERATURE or MAX_TEMPERATURE < value < math.inf:
            raise ParamsError(f"sample.temperature: {self.temperature!r} is not allowed; "
                              f"expected 0 (greedy) or a number from {MIN_TEMPERATURE:g} to "
                              f"{MAX_TEMPERATURE:g}")

    @property
    def plain(self) -> bool:
        """True when words are drawn from the model's own distribution, unfiltered."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0

    def replace(self, **changes: Any) -> "SamplingOptions":
        """A copy with some settings changed (checked like any other)."""
        return dataclasses.replace(self, **changes) if changes else self


# The defaults of the command, the API and the page: a fresh text each time, unless a seed
# is set. The sample stage keeps params.yaml's seed (0), so that `dvc repro` repeats itself.
FRESH = SamplingOptions(seed=None)


def seeded(options: SamplingOptions) -> SamplingOptions:
    """``options`` with the seed a text is drawn with: the one set, else a fresh one, which
    the caller reports so that the text can be drawn again."""
    if options.seed is not None:
        return options
    return options.replace(seed=secrets.randbelow(SEEDS_DRAWN_BELOW))
