"""What the sample stage writes about: the ``prompts`` of params.yaml, or, on a corpus of
one's own, openings of its own text.

The default list was written for WikiText ("The Beatles are", "Super Mario is"); a model
of man pages or of a novel has little to say about them. So when the corpus is not
WikiText and the prompts are still that list, the stage draws as many prompts from the
corpus's valid split instead (text the model was not trained on): the first words of
sentences drawn with the sample seed, so that `dvc repro` draws the same ones again.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

# conf/config.yaml's prompts (tests/test_params.py keeps the two the same).
DEFAULT_PROMPTS = ("I like", "A cat", "She loves you because", "I hope", "The Beatles are",
                   "Super Mario is")
# Words in a prompt drawn from the text.
PROMPT_WORDS = 4
# Where a sentence ends within a line: after . ! or ?, and a closing quote if any.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019]?\s+")


def draw_prompts(text: Path, n: int, seed: int | None, words: int = PROMPT_WORDS) -> list[str]:
    """``n`` prompts from a text file: the first ``words`` words of sentences drawn with
    ``random.Random(seed)``, in the order of the text; sentences of twice as many words
    are preferred (not a heading or a line of a list)."""
    with open(text, encoding="utf-8", errors="replace") as handle:
        sentences = [s.split() for line in handle for s in SENTENCE_END.split(line.strip())]
    sentences = [s for s in sentences if s]
    long = [s for s in sentences if len(s) >= 2 * words]
    pool = long if len(long) >= n else sentences
    picks = sorted(random.Random(seed).sample(range(len(pool)), min(n, len(pool))))
    return [" ".join(pool[i][:words]) for i in picks]


def stage_prompts(prompts: list[str], own_corpus: bool, valid_text: Path,
                  seed: int | None) -> list[str]:
    """The sample stage's prompts: ``prompts``, unless the corpus is one's own and they
    are the default list (see the module docstring)."""
    if not own_corpus or tuple(prompts) != DEFAULT_PROMPTS:
        return prompts
    return draw_prompts(valid_text, len(prompts), seed) or prompts
