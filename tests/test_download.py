"""Tests for lstmlm.data.download (with lstmlm.data.fetch and lstmlm.data.wikitext) and stages/download.py
against a real local HTTP server."""

from __future__ import annotations

import filecmp
import hashlib
import http.server
import io
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from conftest import SHARED_WIKITEXT as SHARED
from lstmlm.data.download import prepare_corpus
from lstmlm.data.fetch import USER_AGENT, DownloadError, fetch
from lstmlm.data.layout import SPLIT_RECORD, SPLITS
from lstmlm.data.wikitext import WIKITEXT103_BYTES, WIKITEXT103_SHA256, load_sums, parse_sums
from lstmlm.data.wikitext_fetch import MIRRORS_103, Mirror

# Tiny stand-ins for the three WikiText-2 files, in the official layout (leading space,
# " \n" line ends) and with non-ASCII text so that byte-exact copying is exercised.
FIXTURE = {
    "train": " \n = Héllo = \n \n the cat sat on the mat . \n",
    "valid": " \n the dog ran – fast . \n",
    "test": " \n a <unk> sat 1 @.@ 5 m away . \n",
}
FIXTURE_BYTES = {s: t.encode("utf-8") for s, t in FIXTURE.items()}
SUMS = {s: hashlib.sha256(b).hexdigest() for s, b in FIXTURE_BYTES.items()}

# Fast settings: retries do not sleep. The timeout is generous: a busy machine must not turn
# an answering server's pause into a retry that the request counts would see. The stalled
# server's tests alone shorten it (STALL_TIMEOUT).
FAST = dict(sums=SUMS, timeout=10.0, retries=1, backoff=0.0, progress=False)
STALL_TIMEOUT = 0.5
NO_ENV: dict[str, str] = {}


def make_zip(members: dict[str, bytes], folder: str = "wikitext-2") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{folder}/", b"")
        for split, data in members.items():
            zf.writestr(f"{folder}/wiki.{split}.tokens", data)
    return buf.getvalue()


GOOD_ZIP = make_zip(FIXTURE_BYTES)
BAD_ZIP = make_zip({**FIXTURE_BYTES, "valid": b" \n tampered . \n"})



def random_text(n_lines: int, seed: int) -> bytes:
    """WikiText-like lines of made-up words: text that compresses poorly."""
    rng = random.Random(seed)
    lines = (" " + " ".join("".join(rng.choices("abcdefghij", k=rng.randint(1, 9)))
                            for _ in range(12)) + " \n" for _ in range(n_lines))
    return "".join(lines).encode("utf-8")


# A stand-in for wikitext-103-v1.zip (same layout, tens of KB), verified as a whole like
# the real one.
WT103_FIXTURE = {s: random_text(n, i) for i, (s, n) in enumerate(zip(SPLITS, (300, 40, 40)))}
WT103_ZIP = make_zip(WT103_FIXTURE, "wikitext-103")
# What /wt103-flaky.zip sends per answer before it hangs up: the zip takes four answers.
FLAKY_BYTES = len(WT103_ZIP) // 4 + 1
WT103_SUM = hashlib.sha256(WT103_ZIP).hexdigest()
# The same size, one byte changed: only the checksum can tell.
WT103_CORRUPT = WT103_ZIP[:100] + bytes([WT103_ZIP[100] ^ 0xFF]) + WT103_ZIP[101:]
FAST_103 = dict(archive_sha256=WT103_SUM, archive_bytes=len(WT103_ZIP), timeout=10.0,
                retries=1, backoff=0.0, progress=False)


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /good.zip, /bad.zip, /truncated.zip, /forbidden.zip, /error.zip,
    /files/{split}.txt, and for WikiText-103 (HTTP Range honoured) /wt103.zip,
    /wt103-corrupt.zip, /wt103-flaky.zip (each answer stops after FLAKY_BYTES) and
    /wt103-norange.zip (Range ignored). Every request is logged on the server as
    (path, User-Agent), its Range header in ``ranges``. ``server.cut_after`` set to n
    makes the next /wt103.zip answer stop after n bytes (a dropped connection)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("User-Agent")))
        self.server.ranges.append(self.headers.get("Range"))
        path = self.path
        if path in ("/wt103.zip", "/wt103-flaky.zip", "/wt103-corrupt.zip"):
            body = WT103_CORRUPT if path == "/wt103-corrupt.zip" else WT103_ZIP
            cut = FLAKY_BYTES if path == "/wt103-flaky.zip" else self.server.cut_after
            self.server.cut_after = None
            self._send_range(body, cut)
        elif path == "/wt103-norange.zip":
            self._send(200, WT103_ZIP)
        elif path == "/good.zip":
            self._send(200, GOOD_ZIP)
        elif path == "/bad.zip":
            self._send(200, BAD_ZIP)
        elif path == "/truncated.zip":
            # Promise the whole archive, send half of it, then hang up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD_ZIP)))
            self.end_headers()
            self.wfile.write(GOOD_ZIP[: len(GOOD_ZIP) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif path == "/forbidden.zip":
            self._send(403, b"forbidden")
        elif path == "/error.zip":
            self._send(503, b"try later")
        elif path.startswith("/files/") and path.endswith(".txt"):
            split = path[len("/files/"):-len(".txt")]
            if split in FIXTURE_BYTES:
                self._send(200, FIXTURE_BYTES[split])
            else:
                self._send(404, b"no such file")
        else:
            self._send(404, b"no such file")

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_range(self, body: bytes, cut: int | None) -> None:
        """Answer ``Range: bytes=N-`` with 206 (416 past the end), anything else with 200;
        with ``cut``, hang up after that many bytes of the promised body."""
        start = 0
        spec = self.headers.get("Range") or ""
        if spec.startswith("bytes=") and spec.endswith("-"):
            start = int(spec[len("bytes="):-1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:] if cut is None else body[start:start + cut])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.requests = []
    srv.ranges = []
    srv.cut_after = None
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv, base
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def stall_url():
    """A server that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except (socket.timeout, OSError):
                continue

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/stall.zip"
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def requests(server):
    srv, _ = server
    srv.requests.clear()
    srv.ranges.clear()
    srv.cut_after = None
    return srv.requests


def split_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def assert_fixture_output(out: Path) -> None:
    assert split_files(out) == ["test.txt", "train.txt", "valid.txt"]
    for split in SPLITS:
        assert (out / f"{split}.txt").read_bytes() == FIXTURE_BYTES[split]


# --------------------------------------------------------------------------- checksums


def test_sums_are_read_from_sha256sum_output():
    digests = {s: hashlib.sha256(s.encode()).hexdigest() for s in SPLITS}
    text = ("# made with sha256sum\n\n"
            f"{digests['train'].upper()}  wiki.train.tokens\n"
            f"{digests['valid']} *wiki.valid.tokens\n"  # binary mode
            f"{digests['test']}  wiki.test.tokens\n{'0' * 64}  README\n")
    assert parse_sums(text) == digests
    with pytest.raises(ValueError, match=r"lacks wiki\.\{valid\}\.tokens"):
        parse_sums(text.replace("wiki.valid", "wiki.other"))
    # The packaged file is the official list (its sums are checked against the real files
    # in test_wikitext_dir_real_copy).
    assert set(load_sums()) == set(SPLITS)


def test_mirror_kinds_are_checked():
    with pytest.raises(ValueError, match="'zip' or 'files'"):
        Mirror("https://example.invalid/x.tar.gz", "tar")
    with pytest.raises(ValueError, match="needs a {split} field"):
        Mirror("https://example.invalid/train.txt", "files")


# --------------------------------------------------------------------------- mirrors


def test_good_zip(server, requests, tmp_path):
    _, base = server
    out = tmp_path / "raw"
    result = prepare_corpus("wikitext-2", out, environ=NO_ENV,
                            mirrors=(Mirror(f"{base}/good.zip"),), **FAST)
    assert_fixture_output(out)
    assert result.source == f"{base}/good.zip" and result.verified is True
    assert {s: f.sha256 for s, f in result.files.items()} == SUMS
    assert result.files["train"].bytes == len(FIXTURE_BYTES["train"])
    assert result.files["train"].path == str(out / "train.txt") and result.split is None


def test_progress_bar_goes_to_stderr(server, requests, tmp_path, capsys):
    _, base = server
    prepare_corpus("wikitext-2", tmp_path / "raw", environ=NO_ENV,
                   mirrors=(Mirror(f"{base}/good.zip"),), **{**FAST, "progress": True})
    captured = capsys.readouterr()
    assert captured.out == "" and "good.zip" in captured.err


def test_files_mirror(server, requests, tmp_path):
    _, base = server
    out = tmp_path / "raw"
    result = prepare_corpus("wikitext-2", out, environ=NO_ENV,
                            mirrors=(Mirror(f"{base}/files/{{split}}.txt", "files"),), **FAST)
    assert_fixture_output(out)
    assert result.files["valid"].origin == f"{base}/files/valid.txt"


def test_corrupted_zip_leaves_nothing(server, requests, tmp_path):
    _, base = server
    out = tmp_path / "raw"
    with pytest.raises(DownloadError) as info:
        prepare_corpus("wikitext-2", out, environ=NO_ENV,
                       mirrors=(Mirror(f"{base}/bad.zip"),), **FAST)
    message = str(info.value)
    assert "wiki.valid.tokens" in message and SUMS["valid"] in message
    assert "does not match" in message
    assert split_files(out) == []


def test_truncated_download_is_retried_then_fails(server, requests, tmp_path):
    _, base = server
    out = tmp_path / "raw"
    with pytest.raises(DownloadError) as info:
        prepare_corpus("wikitext-2", out, environ=NO_ENV,
                       mirrors=(Mirror(f"{base}/truncated.zip"),), **{**FAST, "retries": 2})
    assert "truncated" in str(info.value) and f"of {len(GOOD_ZIP)} bytes" in str(info.value)
    assert [p for p, _ in requests] == ["/truncated.zip"] * 3
    assert split_files(out) == []


def test_403_falls_through_to_next_mirror(server, requests, tmp_path):
    _, base = server
    out = tmp_path / "raw"
    result = prepare_corpus("wikitext-2", out, environ=NO_ENV,
                            mirrors=(Mirror(f"{base}/forbidden.zip"), Mirror(f"{base}/good.zip")),
                            **{**FAST, "retries": 3})
    assert_fixture_output(out)
    assert result.source == f"{base}/good.zip"
    # A 403 is final for that URL: asked once, then the next mirror.
    assert [p for p, _ in requests] == ["/forbidden.zip", "/good.zip"]
    agents = {ua for _, ua in requests}
    assert agents == {USER_AGENT} and not any("Python-urllib" in ua for ua in agents)


def test_5xx_is_retried_with_backoff(server, requests, tmp_path):
    _, base = server
    with pytest.raises(DownloadError) as info:
        prepare_corpus("wikitext-2", tmp_path / "raw", environ=NO_ENV,
                       mirrors=(Mirror(f"{base}/error.zip"),), **{**FAST, "retries": 2})
    assert "HTTP 503" in str(info.value) and "3 attempts" in str(info.value)
    assert len(requests) == 3


def test_stalled_server_times_out(stall_url, tmp_path):
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        prepare_corpus("wikitext-2", tmp_path / "raw", environ=NO_ENV,
                       mirrors=(Mirror(stall_url),),
                       **{**FAST, "retries": 0, "timeout": STALL_TIMEOUT})
    assert time.monotonic() - start < 5
    assert "timed out" in str(info.value) and stall_url in str(info.value)
    assert split_files(tmp_path / "raw") == []


def test_all_mirrors_fail_lists_every_url(server, stall_url, requests, tmp_path):
    _, base = server
    mirrors = (Mirror(f"{base}/forbidden.zip"), Mirror(f"{base}/error.zip"),
               Mirror(stall_url), Mirror(f"{base}/truncated.zip"), Mirror(f"{base}/bad.zip"),
               Mirror(f"{base}/nothing/{{split}}.txt", "files"))
    with pytest.raises(DownloadError) as info:
        prepare_corpus("wikitext-2", tmp_path / "raw", environ=NO_ENV, mirrors=mirrors,
                       **{**FAST, "retries": 0, "timeout": STALL_TIMEOUT})
    message = str(info.value)
    for url in (f"{base}/forbidden.zip", f"{base}/error.zip", stall_url,
                f"{base}/truncated.zip", f"{base}/bad.zip", f"{base}/nothing/train.txt"):
        assert url in message
    assert "HTTP 403" in message and "HTTP 503" in message and "HTTP 404" in message
    assert "WIKITEXT_DIR=/path/to/wikitext-2 dvc repro" in message
    assert "corpus: /path/to/dir" in message
    assert split_files(tmp_path / "raw") == []


# --------------------------------------------------------------------------- WIKITEXT_DIR


@pytest.mark.skipif(not SHARED.is_dir(), reason="no offline WikiText-2 copy")
def test_wikitext_dir_real_copy(tmp_path):
    out = tmp_path / "raw"
    # A mirror that would fail loudly proves the local copy is used, not the network.
    result = prepare_corpus("wikitext-2", out, environ={"WIKITEXT_DIR": str(SHARED)},
                            mirrors=(Mirror("http://127.0.0.1:9/never.zip"),), progress=False)
    assert split_files(out) == ["test.txt", "train.txt", "valid.txt"]
    for split in SPLITS:
        assert filecmp.cmp(out / f"{split}.txt", SHARED / f"wiki.{split}.tokens", shallow=False)
    assert result.verified and result.source == f"WIKITEXT_DIR={SHARED}"
    assert {s: f.sha256 for s, f in result.files.items()} == load_sums()


def write_wikitext_dir(directory: Path) -> Path:
    directory.mkdir()
    for split, data in FIXTURE_BYTES.items():
        (directory / f"wiki.{split}.tokens").write_bytes(data)
    return directory


def test_wikitext_dir_tampered_file_fails(tmp_path):
    local = write_wikitext_dir(tmp_path / "wt2")
    (local / "wiki.test.tokens").write_bytes(b" \n changed . \n")
    out = tmp_path / "raw"
    with pytest.raises(DownloadError) as info:
        prepare_corpus("wikitext-2", out, environ={"WIKITEXT_DIR": str(local)}, mirrors=(),
                       **FAST)
    message = str(info.value)
    actual = hashlib.sha256(b" \n changed . \n").hexdigest()
    assert str(local / "wiki.test.tokens") in message
    assert SUMS["test"] in message and actual in message
    assert split_files(out) == []


def test_wikitext_dir_missing_file_fails(tmp_path):
    local = write_wikitext_dir(tmp_path / "wt2")
    (local / "wiki.valid.tokens").unlink()
    with pytest.raises(DownloadError, match="missing .*wiki.valid.tokens"):
        prepare_corpus("wikitext-2", tmp_path / "raw", environ={"WIKITEXT_DIR": str(local)},
                       mirrors=(), **FAST)
    assert split_files(tmp_path / "raw") == []


def test_wikitext_dir_fixture_ok(tmp_path):
    local = write_wikitext_dir(tmp_path / "wt2")
    prepare_corpus("wikitext-2", tmp_path / "raw", environ={"WIKITEXT_DIR": str(local)},
                   mirrors=(), **FAST)
    assert_fixture_output(tmp_path / "raw")


# --------------------------------------------------------------------------- WikiText-103


def assert_wt103_output(out: Path) -> None:
    assert split_files(out) == ["test.txt", "train.txt", "valid.txt"]
    for split in SPLITS:
        assert (out / f"{split}.txt").read_bytes() == WT103_FIXTURE[split]


def test_wikitext103_defaults_are_the_published_zip():
    assert WIKITEXT103_SHA256.startswith("242ba0f20b329cfd") and WIKITEXT103_BYTES == 190_229_076
    assert [m.url for m in MIRRORS_103] == ["https://wikitext.smerity.com/wikitext-103-v1.zip"]


def test_wikitext103_zip_from_a_mirror(server, requests, tmp_path):
    _, base = server
    out = tmp_path / "raw"
    result = prepare_corpus("wikitext-103", out, environ=NO_ENV,
                            mirrors=(Mirror(f"{base}/wt103.zip"),), **FAST_103)
    assert_wt103_output(out)
    assert result.corpus == "wikitext-103" and result.verified is True
    assert result.files["train"].origin == f"{base}/wt103.zip [wiki.train.tokens]"
    assert {ua for _, ua in requests} == {USER_AGENT}


def test_wikitext103_interrupted_download_resumes(server, requests, tmp_path):
    srv, base = server
    out, partial = tmp_path / "raw", tmp_path / "resume"
    opts = dict(environ=NO_ENV, mirrors=(Mirror(f"{base}/wt103.zip"),), resume_dir=partial,
                **{**FAST_103, "retries": 0})
    half = len(WT103_ZIP) // 2
    srv.cut_after = half  # the first answer breaks off half-way
    with pytest.raises(DownloadError, match=f"got {half} of {len(WT103_ZIP)} bytes"):
        prepare_corpus("wikitext-103", out, **opts)
    assert (partial / "wikitext-103-v1.zip.part").read_bytes() == WT103_ZIP[:half]
    assert split_files(out) == []
    prepare_corpus("wikitext-103", out, **opts)  # the next run asks for the rest only
    assert_wt103_output(out)
    assert srv.ranges == [None, f"bytes={half}-"]
    assert split_files(partial) == []  # the zip is gone once verified and installed


def test_dropped_connections_that_make_progress_use_up_no_retry(server, requests, tmp_path):
    srv, base = server
    dest = tmp_path / "wt103.zip"
    size = fetch(f"{base}/wt103-flaky.zip", dest, timeout=10.0, retries=1, backoff=0.0,
                 progress=False)
    assert size == len(WT103_ZIP) and dest.read_bytes() == WT103_ZIP
    # Four answers, each cut short but the last: one retry would not cover them.
    assert srv.ranges == [None] + [f"bytes={i * FLAKY_BYTES}-" for i in (1, 2, 3)]


def test_wikitext103_corrupt_download_is_refused_and_not_kept(server, requests, tmp_path):
    _, base = server
    out, partial = tmp_path / "raw", tmp_path / "resume"
    with pytest.raises(DownloadError) as info:
        prepare_corpus("wikitext-103", out, environ=NO_ENV, resume_dir=partial,
                       mirrors=(Mirror(f"{base}/wt103-corrupt.zip"),), **FAST_103)
    message = str(info.value)
    assert hashlib.sha256(WT103_CORRUPT).hexdigest() in message and WT103_SUM in message
    assert "does not match" in message and "not WikiText-103 v1" in message
    assert "WIKITEXT103_DIR=/path/to/wikitext-103 dvc repro" in message
    assert split_files(out) == [] and split_files(partial) == []  # the next run starts afresh
    with pytest.raises(DownloadError, match=f"{len(WT103_ZIP):,} bytes, not the"):
        prepare_corpus("wikitext-103", out, environ=NO_ENV,
                       mirrors=(Mirror(f"{base}/wt103.zip"),),
                       **{**FAST_103, "archive_bytes": len(WT103_ZIP) + 1})
    assert split_files(out) == []


def test_wikitext103_complete_partial_zip_is_not_fetched_again(server, requests, tmp_path):
    srv, base = server
    partial = tmp_path / "resume"
    partial.mkdir()
    # A run that was stopped after the download, before the check.
    (partial / "wikitext-103-v1.zip.part").write_bytes(WT103_ZIP)
    prepare_corpus("wikitext-103", tmp_path / "raw", environ=NO_ENV, resume_dir=partial,
                   mirrors=(Mirror(f"{base}/wt103.zip"),), **FAST_103)
    assert_wt103_output(tmp_path / "raw")
    assert srv.ranges == [f"bytes={len(WT103_ZIP)}-"]  # answered 416: nothing left to send


def test_server_ignoring_range_replaces_the_partial_file(server, requests, tmp_path):
    srv, base = server
    partial = tmp_path / "resume"
    partial.mkdir()
    (partial / "wikitext-103-v1.zip.part").write_bytes(b"stale bytes")
    prepare_corpus("wikitext-103", tmp_path / "raw", environ=NO_ENV, resume_dir=partial,
                   mirrors=(Mirror(f"{base}/wt103-norange.zip"),), **FAST_103)
    assert_wt103_output(tmp_path / "raw")
    assert srv.ranges == ["bytes=11-"]


def wikitext103_dir(directory: Path, zip_bytes: bytes | None = None) -> Path:
    """A local WikiText-103 copy: the zip when given, else the extracted files."""
    directory.mkdir()
    if zip_bytes is not None:
        (directory / "wikitext-103-v1.zip").write_bytes(zip_bytes)
    else:
        for split, data in WT103_FIXTURE.items():
            (directory / f"wiki.{split}.tokens").write_bytes(data)
    return directory


def test_wikitext103_dir_with_the_zip(tmp_path):
    local = wikitext103_dir(tmp_path / "wt103", WT103_ZIP)
    out = tmp_path / "raw"
    # A mirror that would fail loudly proves the local copy is used, not the network.
    result = prepare_corpus("wikitext-103", out, environ={"WIKITEXT103_DIR": str(local)},
                            mirrors=(Mirror("http://127.0.0.1:9/never.zip"),), **FAST_103)
    assert_wt103_output(out)
    assert result.verified is True and result.source == f"WIKITEXT103_DIR={local}"


def test_wikitext103_dir_with_a_corrupt_zip_fails(tmp_path):
    local = wikitext103_dir(tmp_path / "wt103", WT103_CORRUPT)
    with pytest.raises(DownloadError, match="wikitext-103-v1.zip: sha256 .* does not match"):
        prepare_corpus("wikitext-103", tmp_path / "raw",
                       environ={"WIKITEXT103_DIR": str(local)}, mirrors=(), **FAST_103)
    assert split_files(tmp_path / "raw") == []


def test_wikitext103_dir_with_extracted_files(tmp_path):
    local = wikitext103_dir(tmp_path / "wt103")
    result = prepare_corpus("wikitext-103", tmp_path / "raw",
                            environ={"WIKITEXT103_DIR": str(local)}, mirrors=(), **FAST_103)
    assert_wt103_output(tmp_path / "raw")
    assert result.verified is False  # no published per-file sums; tokenise checks counts
    (local / "wiki.valid.tokens").unlink()
    with pytest.raises(DownloadError, match="neither wikitext-103-v1.zip nor .*wiki.valid"):
        prepare_corpus("wikitext-103", tmp_path / "raw2",
                       environ={"WIKITEXT103_DIR": str(local)}, mirrors=(), **FAST_103)


# --------------------------------------------------------------------------- own corpus


def test_own_corpus_directory(tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    (own / "train.txt").write_bytes(FIXTURE_BYTES["train"])
    (own / "valid.tokens").write_bytes(FIXTURE_BYTES["valid"])
    (own / "wiki.test.tokens").write_bytes(FIXTURE_BYTES["test"])
    out = tmp_path / "raw"
    result = prepare_corpus(str(own), out, environ={"WIKITEXT_DIR": "/ignored"}, mirrors=())
    assert_fixture_output(out)
    assert result.verified is False and result.source == str(own)
    assert result.files["valid"].origin == str(own / "valid.tokens")


def test_a_split_record_is_written_for_prose_only(tmp_path):
    prose = tmp_path / "story.txt"
    prose.write_text("".join(f"Paragraph {i}, with words.\n\n" for i in range(30)))
    own = tmp_path / "mine"
    own.mkdir()
    for split, data in FIXTURE_BYTES.items():
        (own / f"{split}.txt").write_bytes(data)
    out = tmp_path / "raw"
    assert prepare_corpus(str(prose), out).split is not None
    assert (out / SPLIT_RECORD).is_file()
    assert prepare_corpus(str(own), out).split is None  # into the same directory
    assert_fixture_output(out)  # the old record is gone with the old text


def test_own_corpus_missing_split_lists_names(tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    (own / "train.txt").write_text("a b c\n")
    with pytest.raises(DownloadError) as info:
        prepare_corpus(str(own), tmp_path / "raw", mirrors=())
    message = str(info.value)
    assert "wiki.valid.tokens or valid.txt or valid.tokens" in message
    assert "wiki.test.tokens or test.txt or test.tokens" in message
    assert "train.txt" in message  # what the directory does hold
    assert split_files(tmp_path / "raw") == []


def test_own_corpus_empty_or_absent_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownloadError, match="the directory is empty"):
        prepare_corpus(str(tmp_path / "empty"), tmp_path / "raw", mirrors=())
    with pytest.raises(DownloadError, match="is not 'wikitext-2', 'wikitext-103', or an "
                                            "existing text file or directory"):
        prepare_corpus(str(tmp_path / "nowhere"), tmp_path / "raw", mirrors=())


def test_own_corpus_rejects_non_utf8(tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    for split in SPLITS:
        (own / f"{split}.txt").write_text("ok\n")
    (own / "valid.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DownloadError, match="valid.txt: not UTF-8"):
        prepare_corpus(str(own), tmp_path / "raw", mirrors=())
    assert split_files(tmp_path / "raw") == []


# --------------------------------------------------------------------------- stage script


def run_stage(cwd: Path, params: str, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(params)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("WIKITEXT_DIR", None)
    env.pop("WIKITEXT103_DIR", None)
    env.update(env_vars)
    return subprocess.run([sys.executable, "-m", "stages.download", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_stage_bad_corpus_exits_2(tmp_path):
    proc = run_stage(tmp_path, "download:\n  corpus: no/such/dir\n", "--out", "data/raw")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: download.corpus: 'no/such/dir'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


def test_stage_bad_params_exits_2(tmp_path):
    proc = run_stage(tmp_path, "download:\n  corpse: x\n")
    assert proc.returncode == 2
    assert "error: download.corpse: unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_stage_own_corpus(tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    for split, data in FIXTURE_BYTES.items():
        (own / f"{split}.txt").write_bytes(data)
    proc = run_stage(tmp_path, "download:\n  corpus: mine\n")  # default --out data/raw
    assert proc.returncode == 0, proc.stderr
    assert_fixture_output(tmp_path / "data" / "raw")
    assert "from mine" in proc.stdout and "data/raw/train.txt" in proc.stdout


def test_stage_own_prose_reports_the_split(tmp_path):
    (tmp_path / "story.txt").write_text("".join(f"Line {i}, of prose.\n" for i in range(40)))
    proc = run_stage(tmp_path, "download:\n  corpus: story.txt\n  seed: 3\n")
    assert proc.returncode == 0, proc.stderr
    assert "corpus story.txt from story.txt (copied, not checksummed)" in proc.stdout
    assert re.search(r"split into 40 blocks of lines \(download\.split \[0\.9, 0\.05, 0\.05\], "
                     r"download\.seed 3\): valid blocks \[\d+, \d+\], test blocks \[\d+, \d+\]; "
                     r"lines 36 / 2 / 2", proc.stdout), proc.stdout
    assert (tmp_path / "data" / "raw" / SPLIT_RECORD).is_file()


def test_stage_wikitext103_checks_the_published_zip_sum(tmp_path):
    local = wikitext103_dir(tmp_path / "wt103", WT103_ZIP)  # not the real zip
    proc = run_stage(tmp_path, "download:\n  corpus: wikitext-103\n",
                     WIKITEXT103_DIR=str(local))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: WIKITEXT103_DIR: ") and "Traceback" not in proc.stderr
    assert f"not the {WIKITEXT103_BYTES:,} of wikitext-103-v1.zip" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_stage_wikitext103_extracted_files_are_flagged_unverified(tmp_path):
    local = wikitext103_dir(tmp_path / "wt103")
    proc = run_stage(tmp_path, "download:\n  corpus: wikitext-103\n",
                     WIKITEXT103_DIR=str(local))
    assert proc.returncode == 0, proc.stderr
    assert_wt103_output(tmp_path / "data" / "raw")
    assert "not checksummed" in proc.stdout and "tokenise stage checks the counts" in proc.stdout
