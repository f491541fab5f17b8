"""Which corpus a run reads: the ``download`` section of params.yaml.

Torch-free and without I/O: the params, download and tokenise stages read it (the last
to know which published counts the tokens must reproduce).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lstmlm.core.errors import shown
from lstmlm.core.params import spec
from lstmlm.data.layout import SPLITS

DEFAULT_SHARES = (0.9, 0.05, 0.05)


@dataclass(frozen=True)
class DownloadConfig:
    """The ``download`` section of params.yaml."""

    corpus: str = spec("wikitext-2", doc="'wikitext-2', 'wikitext-103', your own prose (a "
                       "text file, or a folder of .txt files), or a folder holding "
                       "train/valid/test files")
    split: list[float] = spec(list(DEFAULT_SHARES),
                              doc="own prose: the shares of train, valid and test")
    seed: int = spec(0, low=0, doc="own prose: which blocks of lines go to valid and test")
    reflow: str = spec("auto", choices=("auto", "on", "off"),
                       doc="own prose: join hard-wrapped lines into paragraphs and rejoin "
                       "words hyphenated across a line end; auto: when the text looks "
                       "hard-wrapped (lstmlm.data.reflow); WikiText is read as published")

    def __post_init__(self) -> None:
        shares = self.split
        if (len(shares) != len(SPLITS) or not all(s > 0 for s in shares)
                or not math.isclose(sum(shares), 1.0, abs_tol=1e-6)):
            raise ValueError(f"download.split: {shown(self.split)} is not allowed; expected the "
                             "shares of train, valid and test: three numbers above 0 that "
                             f"add up to 1, such as {list(DEFAULT_SHARES)}")
