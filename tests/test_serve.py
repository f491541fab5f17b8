"""`python -m lstmlm serve`: the API in-process (Starlette's TestClient), a real server for
disconnects, and the page in headless Chromium (Playwright driving Debian's chromium).
Hostile pages and clients: test_serve_security.py."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install -e '.[serve]')")
from helpers_browser import chromium  # noqa: E402
from helpers_serve import events, running  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from lstmlm.generate.generator import Generator
from lstmlm.generate.options import SamplingOptions
from lstmlm.generate.text import Detokeniser
from lstmlm.serve.app import create_app


def local_client(app) -> TestClient:
    """Starlette's in-process client, addressing the app as a browser on this machine would
    (its default Host, testserver, is refused like any other foreign name)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def generator(tiny_checkpoint):
    root, _, _ = tiny_checkpoint
    return Generator.load(root / "model.pt")


# ---------------------------------------------------------------------- the API


def test_the_api_streams_the_same_text_as_the_library(generator):
    client = local_client(create_app(generator))
    info = client.get("/api/info").json()
    # one set of defaults, but for the seed: each request draws one unless it gives one
    assert info["defaults"] == {**vars(SamplingOptions()), "seed": None}
    assert info["open_streams"] == 0
    assert info["scheme"] == "wikitext" and info["vocab_size"] == len(generator.vocab)
    query = {"prompt": "the cat Zorblax", "words": 30, "seed": 5, "top_k": "20"}
    response = client.post("/api/generate", json=query)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = events(response.text)
    assert got[0] == ("prompt", {"unknown_words": ["Zorblax"], "words": 30, "seed": 5})
    assert got[-1][0] == "done" and got[-1][1]["words"] == 30
    tokens = [data["token"] for kind, data in got if kind == "token"]
    expected = generator.generate("the cat Zorblax", words=30, seed=5, top_k=20)
    assert tokens == expected.tokens  # the same options, the same seed: the same words
    detokeniser = Detokeniser.after("the cat Zorblax")
    assert ([data["text"] for kind, data in got if kind == "token"]
            == [detokeniser.push(t) for t in tokens])
    assert client.get("/").text.startswith("<!doctype html>")


def test_without_a_seed_each_request_is_a_fresh_sample_it_can_repeat(generator):
    client = local_client(create_app(generator))
    runs = []
    for _ in range(2):
        got = events(client.post("/api/generate", json={"prompt": "the cat", "words": 30}).text)
        runs.append((got[0][1]["seed"], [data["token"] for kind, data in got if kind == "token"]))
    (seed1, tokens1), (seed2, tokens2) = runs
    assert seed1 != seed2 and tokens1 != tokens2  # 44 words, 30 draws: never the same twice
    again = events(client.post("/api/generate", json={"prompt": "the cat", "words": 30,
                                                      "seed": str(seed1)}).text)
    assert [data["token"] for kind, data in again if kind == "token"] == tokens1
    assert tokens1 == generator.generate("the cat", words=30, seed=seed1).tokens


@pytest.mark.parametrize("query, field, needle", [
    ({"top_p": "1.5"}, "top_p", "1.5 is not allowed"),
    ({"words": "0"}, "words", "words: 0 is not allowed"),
    ({"words": "10000"}, "words", "at most 500 on this server"),
    ({"temperature": "hot"}, "temperature", "expected a number"),
    ({"temperature": "nan"}, "temperature", "not allowed"),
    ({"seed": "-1"}, "seed", "seed: -1"),
    ({"top_k": "2.5"}, "top_k", "expected an integer"),
    ({"allow_unk": "maybe"}, "allow_unk", "true or false"),
    ({"bogus": "1"}, "bogus", "unknown setting"),
    ({"words": 2.5}, "words", "expected an integer"),  # JSON numbers are checked too
    ({"temperature": True}, "temperature", "expected a number"),
    ({"prompt": "x" * 100_001}, "prompt", "too long"),
    ({"prompt": ["a list"]}, "prompt", "expected text"),
])
def test_bad_settings_get_a_400_naming_the_field(generator, query, field, needle):
    client = local_client(create_app(generator, max_words=500))
    response = client.post("/api/generate", json={"prompt": "the cat", **query})
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == field and needle in body["error"], body
    assert "Traceback" not in response.text


def test_a_client_that_disconnects_stops_the_generation(generator):
    app = create_app(generator, max_words=1_000_000, delay=0.002)
    with running(app) as url:
        parts = urlsplit(url)

        def open_streams() -> int:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            connection.request("GET", "/api/info")
            return json.loads(connection.getresponse().read())["open_streams"]

        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        connection.request("POST", "/api/generate", json.dumps({"prompt": "the cat",
                                                                "words": 1_000_000}),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        while b"event: token" not in response.read1(4096):
            pass
        assert open_streams() == 1
        connection.close()  # the page was closed
        deadline = time.monotonic() + 10
        while open_streams():  # its generation ended (tokens are drawn only inside it)
            assert time.monotonic() < deadline, "the generation went on after the disconnect"
            time.sleep(0.02)


def test_serve_command_listens_on_localhost_and_reports_bad_input(tiny_checkpoint, tmp_path):
    root, _, _ = tiny_checkpoint
    missing = subprocess.run([sys.executable, "-m", "lstmlm", "serve", "--model",
                              str(tmp_path / "none.pt")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "none.pt: checkpoint not found" in missing.stderr
    process = subprocess.Popen([sys.executable, "-m", "lstmlm", "serve", "--model",
                                str(root / "model.pt"), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving ") and "http://127.0.0.1:" in line, (
            line, process.stderr.read() if process.poll() is not None else "")
        url = line.split()[3]
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        connection.request("GET", "/api/info")
        assert json.loads(connection.getresponse().read())["vocab_size"] == 44
    finally:
        process.terminate()
        process.wait(30)


# ---------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (requirements-test.txt)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def test_the_page_streams_words_and_shows_bad_settings(generator, browser, tmp_path):
    app = create_app(generator, delay=0.02)
    with running(app) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('words').value !== ''")
        assert page.input_value("#top_p") == str(SamplingOptions().top_p)
        page.fill("#prompt", "the cat Zorblax")
        page.fill("#words", "40")
        page.click("#generate")
        counts = []  # how many words the page shows, watched while they arrive
        deadline = time.monotonic() + 30
        while page.inner_text("#status-text").endswith("…") or not counts or counts[-1] < 40:
            counts.append(page.locator("#output .w").count())
            assert time.monotonic() < deadline, counts
            time.sleep(0.03)
        assert counts[-1] == 40 and counts == sorted(counts)
        assert len({c for c in counts if 0 < c < 40}) >= 5, counts  # one after another
        arrivals = page.evaluate("window.lstmlmArrivals")
        assert len(arrivals) == 40 and arrivals[19] - arrivals[0] > 19 * 10  # ms, not at once
        assert "Zorblax" in page.inner_text("#unknown")
        assert page.inner_text("#output").startswith("the cat Zorblax")
        page.screenshot(path=str(tmp_path / "page.png"))

        page.fill("#words", "500")  # Esc stops a text halfway
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#output .w').length >= 3")
        page.keyboard.press("Escape")
        page.wait_for_function("document.getElementById('status-text').textContent === 'stopped'")
        assert 3 <= page.locator("#output .w").count() < 500

        page.fill("#top_p", "1.5")
        with page.expect_response(lambda r: r.url.endswith("/api/generate")) as answer:
            page.click("#generate")
        assert answer.value.status == 400
        page.wait_for_function("document.getElementById('error').textContent !== ''")
        assert "top_p: 1.5 is not allowed" in page.inner_text("#error")
        assert "invalid" in page.get_attribute("#top_p", "class")
        assert page.locator("#output .w").count() == 0
        page.close()


def _generate_on(page, keys: bool = False) -> str:
    """Click Generate (or press Ctrl+Enter in the prompt), wait for the text to end, and
    return it."""
    page.evaluate("document.getElementById('status-text').textContent = ''")
    if keys:
        page.press("#prompt", "Control+Enter")
    else:
        page.click("#generate")
    page.wait_for_function("/ words in .* s, seed \\d+$/.test("
                           "document.getElementById('status-text').textContent)")
    return page.inner_text("#output")


def _seed_shown(page) -> int:
    return int(page.inner_text("#status-text").rsplit("seed ", 1)[1])


def test_the_page_explains_itself_and_repeats_only_a_set_seed(generator, browser):
    with running(create_app(generator)) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.getElementById('words').value !== ''")
        for name in ("words", "temperature", "top_k", "top_p", "seed"):  # one line of help each
            help_line = page.locator(f"#{name}-help")
            assert help_line.is_visible() and len(help_line.inner_text()) > 20, name
            assert page.get_attribute(f"#{name}", "aria-describedby") == f"{name}-help"
        assert "at most 2000 here" in page.inner_text("#words-help")
        assert "Ctrl+Enter generates" in page.inner_text("#shortcuts")
        assert page.locator("#shortcuts").is_visible()
        assert page.input_value("#seed") == ""  # no seed: a fresh text on each click
        page.fill("#words", "30")

        first, second = _generate_on(page), _generate_on(page, keys=True)
        assert first != second and first.startswith("The Beatles are")
        assert page.locator("#keep-seed").is_visible()  # the drawn seed, offered back
        drawn = _seed_shown(page)
        page.click("#keep-seed")
        assert page.input_value("#seed") == str(drawn)
        assert _generate_on(page) == second  # that seed gives that text again

        page.fill("#seed", "7")  # a fixed seed: the same text on each click
        third, fourth = _generate_on(page), _generate_on(page, keys=True)
        assert third == fourth and _seed_shown(page) == 7
        assert not page.locator("#keep-seed").is_visible()
        page.close()
