"""Your own text in one step: a file or a folder of .txt files of prose is split into
train/valid/test (lstmlm.data.owntext), tokenised the way prompts are (the `text` scheme, picked
by `tokenise.scheme: auto`), and trained on with an adaptive softmax whose clusters follow
the vocabulary (model.cutoffs as shares). Also the data faults of issue 23: a byte-order
mark, an own-corpus path that does not exist, and a queued experiment whose relative corpus
path is not tracked."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers_dvc import (
    commit_and_repro,
    copy_project,
    copy_repo,
    dvc,
    git,
    set_params,
    wait_for_queue,
)

import lstmlm
from conftest import ROOT, TINY_MODEL, TINY_TRAIN
from lstmlm.core.errors import CorpusError
from lstmlm.core.loading import load
from lstmlm.core.params import ParamsError, read_params
from lstmlm.data import textfile as corpus
from lstmlm.data.corpus import DownloadConfig
from lstmlm.data.download import check_corpus, prepare_corpus
from lstmlm.data.fetch import DownloadError
from lstmlm.data.layout import SPLIT_RECORD
from lstmlm.data.owntext import unmet_shares
from lstmlm.data.schemes import CLITICS, SCHEMES, tokenise_lines, wikitext_prompt_words
from lstmlm.data.tensorise import tensorise_corpus
from lstmlm.data.tokenise import tokenise_corpus
from lstmlm.data.vocab import EOS, Vocabulary
from lstmlm.generate.text import detokenise, tokenise_prompt
from lstmlm.model.config import ModelConfig
from lstmlm.model.lstm import LSTMLanguageModel
from lstmlm.train.memory import parameter_count

slow = pytest.mark.slow
# An original story of 7 KB: paragraphs one to a line, with commas, colons, semicolons,
# double quotes and apostrophes (don't, it's, we'd, book's). Written for these tests.
PROSE = Path(__file__).parent / "texts" / "lantern_keeper.txt"
# Words the story uses in many paragraphs, so they are in train whichever blocks go to
# valid and test; with commas and a colon between them.
# Its first six paragraphs hard-wrapped at 70 columns, four words hyphenated across a line end.
WRAPPED = Path(__file__).parent / "texts" / "wrapped_keeper.txt"
PROMPT = "The river was cold, the lantern was bright, and she said: \"Come up to the house"


def numbered_prose(path: Path, n_lines: int, blank_every: int = 3) -> list[str]:
    """A text of numbered lines with a blank line after every ``blank_every``-th."""
    lines = []
    for i in range(n_lines):
        lines.append(f"Line {i} of the text, as people write it.")
        if i % blank_every == blank_every - 1:
            lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [line for line in lines if line]


def numbers(path: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^Line (\d+) ", path.read_text(), re.M)]


def runs(values: list[int]) -> int:
    """How many runs of consecutive integers ``values`` (sorted) makes."""
    return sum(1 for a, b in zip([None, *values], values) if a is None or b != a + 1)


def files_in(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --------------------------------------------------------------------------- splitting


def test_prose_is_split_into_whole_blocks_of_running_text(tmp_path):
    text = tmp_path / "notes.txt"
    numbered_prose(text, 200)
    config = DownloadConfig(str(text), split=[0.8, 0.1, 0.1], seed=7)
    result = prepare_corpus(config, tmp_path / "raw")
    raw = tmp_path / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [SPLIT_RECORD, "test.txt", "train.txt",
                                                     "valid.txt"]
    got = {split: numbers(raw / f"{split}.txt") for split in ("train", "valid", "test")}
    # Every line once, each split in the order of the text.
    assert sorted(sum(got.values(), [])) == list(range(200))
    assert all(values == sorted(values) for values in got.values())
    # 100 blocks of 2 numbered lines: 10 blocks each for valid and test, as whole blocks
    # (runs of consecutive lines, at most one per block), not scattered lines.
    split = result.split
    assert split["blocks"] == 100 and len(split["valid_blocks"]) == len(split["test_blocks"]) == 10
    assert len(got["valid"]) == len(got["test"]) == 20 and len(got["train"]) == 160
    assert runs(got["valid"]) <= 10 and runs(got["test"]) <= 10
    assert {2 * k for k in split["valid_blocks"]} == {n for n in got["valid"] if n % 2 == 0}
    assert split["lines"] == {s: len((raw / f"{s}.txt").read_text().splitlines())
                              for s in ("train", "valid", "test")}
    assert split["fractions"] == [0.8, 0.1, 0.1] and split["seed"] == 7
    assert split["files"] == [{"name": "notes.txt", "bytes": text.stat().st_size,
                               "sha256": hashlib.sha256(text.read_bytes()).hexdigest()}]
    assert yaml.safe_load((raw / SPLIT_RECORD).read_text()) == split
    # The same seed gives the same bytes; another seed another choice.
    prepare_corpus(config, tmp_path / "again")
    assert files_in(tmp_path / "again") == files_in(raw)
    other = prepare_corpus(DownloadConfig(str(text), split=[0.8, 0.1, 0.1], seed=8),
                           tmp_path / "other")
    assert other.split["valid_blocks"] != split["valid_blocks"]


def test_hard_wrapped_hyphenated_prose_is_read_as_paragraphs_not_fragments(tmp_path, capsys):
    """The story's first six paragraphs wrapped at 70 columns, four words broken across a
    line end ("re-" / "member", "al\u2010" / "ways": ASCII and Unicode hyphens): the
    download stage gives back the paragraphs, one to a line, and says what it did."""
    from stages.download import report

    paragraphs = [line for line in PROSE.read_text(encoding="utf-8").splitlines()
                  if line.strip()][1:7]
    result = prepare_corpus(DownloadConfig(str(WRAPPED)), tmp_path / "raw")
    read = [line for split in ("train", "valid", "test")
            for line in (tmp_path / "raw" / f"{split}.txt").read_text().splitlines() if line]
    assert sorted(read) == sorted(paragraphs)
    assert result.split["reflow"] == {"mode": "auto", "files_reflowed": 1,
                                      "lines_joined": 24 - 6, "words_dehyphenated": 4}
    report(result)
    assert "18 line ends joined into paragraphs, 4 of them words hyphenated" in \
        capsys.readouterr().out
    vocab, _ = tokenise_corpus(tmp_path / "raw", tmp_path / "tok", tmp_path / "v.json",
                               scheme="text")
    assert {"remember", "always", "books", "could"} <= set(vocab.words)
    assert not [w for w in vocab.words if w[-1] in "-\u2010" or w in ("member", "ways", "ks")]

    kept = prepare_corpus(DownloadConfig(str(WRAPPED), reflow="off"), tmp_path / "off")
    assert kept.split["reflow"]["lines_joined"] == 0 and kept.split["lines"]["train"] > 20
    # Text written a paragraph or a sentence to a line is not hard-wrapped: kept as it is.
    numbered_prose(tmp_path / "numbered.txt", 60)
    for text in (PROSE, tmp_path / "numbered.txt"):
        assert prepare_corpus(DownloadConfig(str(text)), tmp_path / text.stem).split[
            "reflow"]["files_reflowed"] == 0


def test_a_folder_of_txt_files_is_read_in_path_order_without_byte_order_marks(tmp_path):
    folder = tmp_path / "texts"
    (folder / "b").mkdir(parents=True)
    (folder / "c").mkdir()
    expected = []
    for name in ("a.txt", "b/2.txt", "c/d.txt"):
        lines = [f"{name} says line {i}." for i in range(20)]
        expected += lines
        bom = "\ufeff" if name == "a.txt" else ""
        (folder / name).write_text(bom + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    (folder / ".hidden.txt").write_text("not part of the corpus\n")
    (folder / "notes.md").write_text("not a .txt file\n")
    result = prepare_corpus(str(folder), tmp_path / "raw")
    position = {line: i for i, line in enumerate(expected)}
    seen = []
    for split in ("train", "valid", "test"):
        data = (tmp_path / "raw" / f"{split}.txt").read_bytes()
        assert "\ufeff".encode() not in data and b"\r" not in data
        lines = data.decode().splitlines()
        assert [position[line] for line in lines] == sorted(position[line] for line in lines)
        seen += lines
    assert sorted(seen, key=position.get) == expected
    assert [f["name"] for f in result.split["files"]] == ["a.txt", "b/2.txt", "c/d.txt"]


def test_too_short_a_text_or_shares_that_leave_no_train_name_the_key(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("One line.\n\n   \nTwo lines.\n")
    with pytest.raises(DownloadError, match=r"download\.corpus: .*short\.txt is too short to "
                                            r"split: 2 non-blank .*download\.split"):
        prepare_corpus(str(short), tmp_path / "raw")
    four = tmp_path / "four.txt"
    numbered_prose(four, 4)
    with pytest.raises(DownloadError, match=r"download\.split: \[0\.1, 0\.45, 0\.45\] leaves no "
                                            r"text for train .*\[0\.9, 0\.05, 0\.05\]"):
        prepare_corpus(DownloadConfig(str(four), split=[0.1, 0.45, 0.45]), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    prepare_corpus(str(four), tmp_path / "raw")  # 4 lines: 2 / 1 / 1
    assert [len(numbers(tmp_path / "raw" / f"{s}.txt")) for s in ("train", "valid", "test")] \
        == [2, 1, 1]


def test_shares_a_short_text_cannot_meet_are_said(tmp_path):
    """Three lines split 90/5/5 became 1/1/1 without a word: the download stage warns."""
    (tmp_path / "three.txt").write_text("One.\nTwo.\nThree.\n")
    (tmp_path / "params.yaml").write_text(f"download:\n  corpus: {tmp_path / 'three.txt'}\n")
    result = subprocess.run([sys.executable, "-m", "stages.download", "--params",
                             str(tmp_path / "params.yaml"), "--out", str(tmp_path / "raw")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("warning: download.split [0.9, 0.05, 0.05] cannot be met in 3 "
                             "blocks of lines: valid 1 of 3 and test 1 of 3 blocks, as every "
                             "split gets one at least; a text of 10 non-blank lines or more "
                             "meets them\n")
    twenty = tmp_path / "twenty.txt"
    numbered_prose(twenty, 20)
    assert unmet_shares(prepare_corpus(str(twenty), tmp_path / "raw20").split) is None


def test_utf16_without_its_mark_and_devices_are_refused_in_one_line(tmp_path):
    """UTF-16LE without a byte-order mark decodes as UTF-8 with a NUL between letters (its
    words became '\\x00r\\x00a\\x00n'); a corpus path naming a device or a FIFO gave a
    NotADirectoryError traceback from the params stage."""
    text = "The river ran.\nThe lantern shone.\nShe said so.\n"
    (tmp_path / "notes.txt").write_bytes(text.encode("utf-16-le"))
    folder = tmp_path / "split"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_bytes(text.encode("utf-16-le"))
    for corpus_path in (tmp_path / "notes.txt", folder):
        with pytest.raises(DownloadError, match="not UTF-8 text .a NUL character near byte 1, "
                                                "as UTF-16 text has"):
            prepare_corpus(str(corpus_path), tmp_path / "raw")
    with pytest.raises(CorpusError, match="NUL character near byte 1"):
        list(corpus.iter_text_blocks(tmp_path / "notes.txt"))
    os.mkfifo(tmp_path / "fifo")
    for device in ("/dev/null", str(tmp_path / "fifo")):
        with pytest.raises(DownloadError, match="^download.corpus: .* is not a regular file or "
                                                "a directory .a device, a FIFO or a socket.") as caught:
            check_corpus(device, environ={})
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("section, message", [
    ("split: [0.5, 0.5]", r"download\.split: \[0\.5, 0\.5\] is not allowed; expected the shares"),
    ("split: [0.9, 0.1, 0.0]", r"download\.split: .*three numbers above 0 that add up to 1"),
    ("split: [0.9, 0.2, 0.1]", r"download\.split: .*such as \[0\.9, 0\.05, 0\.05\]"),
    ("split: [0.9, 0.05, yes]", r"download\.split"),
    ("seed: -1", r"download\.seed: -1 is not allowed"),
])
def test_download_split_and_seed_are_checked_with_the_params(tmp_path, section, message):
    (tmp_path / "p.yaml").write_text(f"download:\n  corpus: notes.txt\n  {section}\n")
    with pytest.raises(ParamsError, match=message):
        read_params(tmp_path / "p.yaml", download=DownloadConfig)


# --------------------------------------------------------------------------- tokenising


def test_a_byte_order_mark_is_not_a_word(tmp_path, monkeypatch):
    folder = tmp_path / "mine"  # train/valid/test files: copied byte for byte
    folder.mkdir()
    (folder / "train.txt").write_bytes("\ufeffThe cat sat .\nThe dog ran .\n".encode())
    (folder / "valid.txt").write_bytes("\ufeffThe cat ran .\n".encode())
    (folder / "test.txt").write_text("The dog sat .\n")
    prepare_corpus(str(folder), tmp_path / "raw")
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 1)  # the mark split across reads, too
    vocab, counts = tokenise_corpus(tmp_path / "raw", tmp_path / "tok", tmp_path / "v.json",
                                    scheme="wikitext")
    assert vocab.counts[vocab.index["The"]] == 2  # both lines' first word
    assert not any("\ufeff" in word for word in vocab.words)
    assert (tmp_path / "tok" / "valid.txt").read_text() == f"The cat ran . {EOS}\n"
    stats = tensorise_corpus(tmp_path / "tok", vocab, tmp_path / "ids")
    assert stats["splits"]["valid"]["oov_rate"] == 0.0


def test_auto_reads_own_prose_as_text_and_split_folders_as_before(tmp_path, tiny_corpus):
    prepare_corpus(str(PROSE), tmp_path / "raw")
    vocab, _ = tokenise_corpus(tmp_path / "raw", tmp_path / "tok", tmp_path / "v.json",
                               scheme="auto")
    assert vocab.scheme == "text" and Vocabulary.load(tmp_path / "v.json").scheme == "text"
    first = (tmp_path / "raw" / "train.txt").read_text().splitlines()[0]
    assert (tmp_path / "tok" / "train.txt").read_text().splitlines()[0] == " ".join(
        tokenise_prompt(first, "text") + [EOS])
    record = yaml.safe_load((tmp_path / "raw" / SPLIT_RECORD).read_text())
    assert (tmp_path / "tok" / SPLIT_RECORD).read_text() == (tmp_path / "raw" / SPLIT_RECORD).read_text()
    stats = tensorise_corpus(tmp_path / "tok", vocab, tmp_path / "ids")
    assert stats["split"] == {k: v for k, v in record.items() if k != "files"}
    # A folder of train/valid/test files is WikiText-like text, split on spaces, as before.
    vocab, _ = tokenise_corpus(tiny_corpus, tmp_path / "tok2", tmp_path / "v2.json",
                               scheme="auto")
    assert vocab.scheme == "wikitext" and not (tmp_path / "tok2" / SPLIT_RECORD).exists()
    assert "split" not in tensorise_corpus(tmp_path / "tok2", vocab, tmp_path / "ids2")


def glued(word: str) -> bool:
    """A word with punctuation stuck to it ("work,", "License.", "(the", "said:")."""
    if not any(c.isalnum() for c in word) or word in CLITICS or word.startswith("'"):
        return False
    return word[0] in "(\"“‘[" or word[-1] in ".,;:!?\")”’]'"


def test_the_text_scheme_is_the_prompt_tokeniser_and_detokenises_back():
    assert SCHEMES["text"] is wikitext_prompt_words
    lines = [line for line in PROSE.read_text().splitlines() if line]
    tokens = list(tokenise_lines(lines, "text"))
    assert not [w for line in tokens for w in line if glued(w)]
    assert {",", ":", ";", "\"", "'s", "'t"} <= {w for line in tokens for w in line}
    for line, line_tokens in zip(lines, tokens):
        assert line_tokens[:-1] == tokenise_prompt(line, "text")
        assert detokenise(line_tokens, "text") == line + "\n"


# --------------------------------------------------------------------------- output layer


def test_share_cutoffs_give_wikitext2_its_clusters_and_fit_any_vocabulary():
    assert ModelConfig().cutoffs == [0.0601, 0.3005]
    assert ModelConfig().for_vocab(33_278).cutoffs == [2000, 10000]
    for vocab_size in range(3, 3000):
        first, second = ModelConfig().for_vocab(vocab_size).cutoffs
        assert isinstance(first, int) and 1 <= first < second < vocab_size
    assert ModelConfig(cutoffs=[20, 40]).for_vocab(41).cutoffs == [20, 40]  # counts as given
    assert ModelConfig(output="full").for_vocab(2) == ModelConfig(output="full")
    for bad in ([0.5, 2000], [1.5], [0.3, 0.1]):
        with pytest.raises(ValueError, match=r"model\.cutoffs: "):
            ModelConfig(cutoffs=bad)


def test_cutoffs_that_do_not_fit_name_the_key_and_a_value_that_does():
    with pytest.raises(ValueError) as info:
        ModelConfig(cutoffs=[2000, 10000]).for_vocab(2419)
    message = str(info.value)
    assert message.startswith("model.cutoffs: [2000, 10000] is not allowed; the last cutoff "
                              "must be below the vocabulary size 2419")
    assert "[0.0601, 0.3005]" in message and "model.output: full" in message
    ModelConfig(cutoffs=[0.0601, 0.3005]).for_vocab(2419)  # the value it names works
    with pytest.raises(ValueError, match=r"\(here \[1, 2\]\) .*size 2; use fewer cutoffs"):
        ModelConfig().for_vocab(2)


def test_the_model_holds_the_cutoffs_as_word_counts(tmp_path, tiny_corpus):
    """What the checkpoint stores (model.config): the pipeline test below loads one back."""
    vocab, _ = tokenise_corpus(tiny_corpus, tmp_path / "tok", tmp_path / "v.json",
                               scheme="wikitext")
    config = ModelConfig(emb=16, hidden=16)  # default cutoffs: shares
    with pytest.raises(ValueError, match="ModelConfig.for_vocab"):
        LSTMLanguageModel(config, len(vocab))  # shares are sized once, by the stage
    sized = config.for_vocab(len(vocab))
    model = LSTMLanguageModel(sized, len(vocab))
    expected = [round(0.0601 * len(vocab)), round(0.3005 * len(vocab))]
    assert model.config.cutoffs == expected == list(model.decoder.cutoffs[:-1])
    assert model.config == sized != config and sized.for_vocab(len(vocab)) == sized
    # The memory estimate counts the parameters the model has.
    assert parameter_count(sized, len(vocab)) == sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def story_repo(tmp_path_factory) -> tuple[Path, str]:
    """A git + DVC repo of the project whose params name one prose file and small sizes,
    nothing else (no cutoffs, no scheme), after its `dvc repro`: (repo, repro's output)."""
    dest = tmp_path_factory.mktemp("own") / "story"
    copy_project(dest)
    shutil.copy(PROSE, dest / "story.txt")
    model = {k: v for k, v in TINY_MODEL.items() if k != "cutoffs"}
    set_params(dest, {"download": {"corpus": "story.txt"}, "model": model, "train": TINY_TRAIN,
                      "evaluate": {"batch_size": 4, "test_batch_size": 2, "bptt": 8},
                      "sample": {"words": 10}})
    return dest, commit_and_repro(dest, "my story")


@slow
def test_a_tiny_model_trains_on_one_file_of_prose_through_the_pipeline(story_repo):
    repo, output = story_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["model"]["cutoffs"] == [0.0601, 0.3005] and params["tokenise"]["scheme"] == "auto"
    vocab = Vocabulary.load(repo / "data" / "vocab.json")
    assert vocab.scheme == "text", output
    assert not [word for word in vocab.words if glued(word)]
    assert {",", ":", ";", "\"", "'s"} <= set(vocab.words)

    checkpoint = load(repo / "data" / "model.pt")
    tokens = tokenise_prompt(PROMPT, checkpoint.vocab.scheme)
    assert "," in tokens and ":" in tokens and not [t for t in tokens if t not in vocab.index]
    generation = lstmlm.load(repo / "data" / "model.pt").generate(PROMPT, words=8, seed=0)
    assert generation.unknown_words == [] and len(generation.tokens) == 8
    cutoffs = checkpoint.model.config.cutoffs
    assert cutoffs == ModelConfig().for_vocab(len(vocab)).cutoffs and cutoffs[-1] < len(vocab)

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    metrics = stages["tensorise"]["cmd"].split("--metrics ")[1].split()[0]
    data = yaml.safe_load((repo / metrics).read_text())
    assert data["split"]["fractions"] == [0.9, 0.05, 0.05] and data["split"]["seed"] == 0
    assert data["vocab_size"] == len(vocab)
    assert data["splits"]["train"]["tokens"] > data["splits"]["valid"]["tokens"] > 0
    # The default prompts are WikiText's: the samples open sentences of the story's valid split.
    samples = (repo / "metrics" / "samples.md").read_text(encoding="utf-8")
    prompts = re.findall(r"^## (.*)$", samples, flags=re.M)
    valid = (repo / "data" / "raw" / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert len(prompts) == 6 and "Beatles" not in samples
    assert all(any(p in line for line in valid) for p in prompts), prompts


def test_own_text_draws_its_prompts_from_valid_seeded_unless_some_are_set(tmp_path):
    from lstmlm.generate.prompts import DEFAULT_PROMPTS, stage_prompts

    valid = tmp_path / "valid.txt"
    valid.write_text("".join(f"Line {i} opens a paragraph of eight words here.\n\nShort {i}\n"
                             for i in range(40)), encoding="utf-8")
    default = list(DEFAULT_PROMPTS)
    drawn = stage_prompts(default, True, valid, seed=0)
    assert len(drawn) == 6 and all(re.fullmatch(r"Line \d+ opens a", p) for p in drawn)
    assert drawn == sorted(drawn, key=lambda p: int(p.split()[1]))  # in the text's order
    assert stage_prompts(default, True, valid, seed=0) == drawn  # the seed repeats them
    assert stage_prompts(default, True, valid, seed=1) != drawn
    assert stage_prompts(default, False, valid, seed=0) == default  # WikiText's own
    assert stage_prompts(["Once upon"], True, valid, seed=0) == ["Once upon"]  # set: kept


# --------------------------------------------------------------------------- missing text


def test_check_corpus_stops_a_missing_or_empty_own_corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("Some prose.\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "markdown").mkdir()
    (tmp_path / "markdown" / "a.md").write_text("# no .txt here\n")
    for fine in ("wikitext-2", "wikitext-103", "notes.txt", str(tmp_path / "notes.txt")):
        check_corpus(fine, environ={})
    with pytest.raises(DownloadError, match=r"^download\.corpus: 'notes\.txtt' is not "
                                            r"'wikitext-2', 'wikitext-103', or an existing"):
        check_corpus("notes.txtt", environ={})
    with pytest.raises(DownloadError, match="the directory is empty"):
        check_corpus("empty", environ={})
    with pytest.raises(DownloadError, match=r"(?s)holds no \.txt files .*holds: a\.md"):
        check_corpus("markdown", environ={})


def test_a_queued_run_without_its_relative_untracked_text_says_why(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "notes.txt").write_text("Some prose.\n")
    queued = repo / ".dvc" / "tmp" / "exps" / "tmpabc"  # where DVC runs a queued experiment
    queued.mkdir(parents=True)
    monkeypatch.chdir(queued)
    with pytest.raises(DownloadError) as info:
        check_corpus("data/notes.txt", environ={"DVC_ROOT": str(repo)})
    message = str(info.value)
    assert message.startswith("download.corpus: 'data/notes.txt' is not")
    assert f"It exists in {repo}" in message and "queued experiment" in message
    assert "relative and the text is not tracked by git or DVC" in message
    assert f"download.corpus: {repo / 'data' / 'notes.txt'}" in message
    assert "`dvc add data/notes.txt`" in message
    # In the repository itself (dvc repro sets DVC_ROOT there too) the path is just wrong.
    monkeypatch.chdir(repo)
    with pytest.raises(DownloadError) as info:
        check_corpus("data/notes.txtt", environ={"DVC_ROOT": str(repo)})
    assert "queued" not in str(info.value)


def run_module(module: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@slow
def test_the_params_stage_stops_a_typo_in_the_corpus_path_before_dvc_deletes_data(
        story_repo, tmp_path):
    repo = copy_repo(story_repo[0], tmp_path / "repo")
    before = files_in(repo / "data" / "raw")
    set_params(repo, {"download": {"corpus": "corpsu"}})
    output = dvc(repo, "repro", check=False)
    assert "error: download.corpus: 'corpsu' is not 'wikitext-2'" in output, output
    assert "Running stage 'download'" not in output
    assert files_in(repo / "data" / "raw") == before  # DVC deleted nothing


@slow
def test_a_queued_experiment_on_an_ignored_relative_text_says_why(story_repo, tmp_path):
    repo = copy_repo(story_repo[0], tmp_path / "repo")
    shutil.copy(PROSE, repo / "data" / "story.txt")  # data/ is in .gitignore
    set_params(repo, {"download": {"corpus": "data/story.txt"}})
    git(repo, "commit", "-qam", "train on my story")
    output = dvc(repo, "exp", "run", "--queue")
    name = re.search(r"Queued experiment '([\w-]+)'", output).group(1)
    try:
        dvc(repo, "queue", "start", "-j", "1")
        wait_for_queue(repo, [name], timeout=180)
    finally:
        dvc(repo, "queue", "stop", "--kill", check=False)
    logs = dvc(repo, "queue", "logs", name, check=False)
    assert "error: download.corpus: 'data/story.txt' is not" in logs, logs
    assert "relative and the text is not tracked by git or DVC" in logs
    assert f"download.corpus: {(repo / 'data' / 'story.txt').resolve()}" in logs


@slow
def test_the_train_stage_blames_the_cutoffs_not_the_batch_size(tmp_path, tiny_corpus):
    vocab, _ = tokenise_corpus(tiny_corpus, tmp_path / "tok", tmp_path / "vocab.json",
                               scheme="wikitext")
    tensorise_corpus(tmp_path / "tok", vocab, tmp_path / "ids")
    params = {"model": {**TINY_MODEL, "cutoffs": [2000, 10000]}, "train": TINY_TRAIN}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_module("stages.train", tmp_path, "--ids", "ids", "--vocab", "vocab.json",
                      "--checkpoint", "model.pt", "--live", "live", "--resume-dir", "resume")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        f"error: model.cutoffs: [2000, 10000] is not allowed; the last cutoff must be below "
        f"the vocabulary size {len(vocab)}; use shares of the vocabulary, such as "
        "[0.0601, 0.3005] (the default), or model.output: full")
    assert "batch_size" not in proc.stderr and "Traceback" not in proc.stderr
