"""`python -m lstmlm serve` against hostile pages and clients: the real command as a process
on 127.0.0.1, spoken to over HTTP (by hand where a request is malformed on purpose). See
docs/serving.md for the rules these hold it to."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install -e '.[serve]')")
from helpers_serve import ServeProcess, call, events, raw_exchange  # noqa: E402

from lstmlm.serve.app import MAX_BODY_BYTES

SETTINGS = json.dumps({"prompt": "the cat", "words": 3})


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    root, _, _ = tiny_checkpoint
    with ServeProcess(["--model", str(root / "model.pt")],
                      tmp_path_factory.mktemp("serve") / "stderr.log") as process:
        yield process
    assert "Traceback" not in process.log()


def new_log(server, since: str) -> str:
    """What the server wrote to stderr after ``since`` (an earlier log())."""
    return server.log()[len(since):]


# ---------------------------------------------------------------------- Host (DNS rebinding)


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:{port}", True), ("localhost:{port}", True), ("[::1]:{port}", True),
    ("LOCALHOST:{port}", True), ("app.localhost:{port}", True), ("127.0.0.1", True),
    ("evil.example:{port}", False), ("evil.example", False),
    ("127.0.0.1.nip.io:{port}", False),  # a name that resolves to 127.0.0.1: rebinding
    ("192.168.1.10:{port}", False),       # not this server's address: it listens on loopback
    ("evil.example@127.0.0.1:{port}", False), ("", False),
])
def test_only_loopback_host_names_are_answered(server, host, allowed):
    header = {"Host": host.format(port=server.port)}
    for method, path, body in (("GET", "/", None), ("GET", "/api/info", None),
                               ("POST", "/api/generate", SETTINGS)):
        status, _, text = call(server.port, method, path, body, header)
        if allowed:
            assert status == 200, (method, path, text)
        else:
            assert status == 403, (method, path, status, text[:200])
            error = json.loads(text)["error"]
            assert error.startswith("Host ") and "DNS rebinding" in error
            assert "vocab_size" not in text and "event:" not in text


# ---------------------------------------------------------------------- Origin (other pages)


@pytest.mark.parametrize("origin, content_type", [
    ("https://evil.example", "text/plain"),  # a "simple" request: no CORS preflight first
    ("https://evil.example", "application/x-www-form-urlencoded"),  # a <form> post
    ("https://evil.example", "application/json"),
    ("http://localhost:1", "text/plain"),    # another port on this machine: another origin
    ("null", "text/plain"),                  # a sandboxed frame or a file:// page
])
def test_a_cross_origin_post_is_refused(server, origin, content_type):
    status, headers, text = call(server.port, "POST", "/api/generate", SETTINGS,
                                 {"Origin": origin, "Content-Type": content_type})
    assert status == 403, text[:200]
    assert f"the page at {origin} are not allowed" in json.loads(text)["error"]
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


def test_same_origin_and_origin_less_requests_are_answered(server):
    port = server.port
    for headers in ({"Origin": f"http://127.0.0.1:{port}"},
                    {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
                    {}):  # curl, scripts: not a page in a browser
        status, _, text = call(server.port, "POST", "/api/generate", SETTINGS,
                               {"Content-Type": "application/json", **headers})
        assert status == 200 and events(text)[-1][0] == "done", (headers, text[:200])


# ---------------------------------------------------------------------- bodies


def _post_head(port: int, *lines: str) -> bytes:
    head = ["POST /api/generate HTTP/1.1", f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def test_a_huge_body_is_refused_before_it_is_read(server):
    # Only the headers are sent: the answer must come without a byte of the 200 MB.
    reply = raw_exchange(server.port, _post_head(server.port, "Content-Length: 200000000"),
                         timeout=3)  # answered, and the connection closed, at once
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert reply.endswith(b"Content Too Large")


def test_a_chunked_body_is_cut_off_at_the_cap(server):
    chunk = b"x" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    count = MAX_BODY_BYTES // len(chunk) + 2  # just past the cap, and no final chunk
    head = _post_head(server.port, "Transfer-Encoding: chunked")
    reply = raw_exchange(server.port, head, *[framed] * count, timeout=3)
    assert reply.startswith(b"HTTP/1.1 413") and reply.endswith(b"Content Too Large")
    assert call(server.port, "GET", "/api/info")[0] == 200  # and it serves on


@pytest.mark.parametrize("body, field, needle", [
    pytest.param(b'{"prompt": "caf\xe9"}', None, "not UTF-8 text (byte 16 is 0xe9)", id="latin-1"),
    pytest.param(b'{"prompt": "\\ud800 cat"}', "prompt", "prompt: holds a lone surrogate",
                 id="surrogate-in-prompt"),
    pytest.param(b'{"prompt": "the", "\\udfff": 1}', None, "holds a lone surrogate",
                 id="surrogate-in-name"),
    pytest.param(b"[" * 100_000, None, "nested too deeply", id="deep-nesting"),
    pytest.param(b'{"prompt": "the", ', None, "expected a JSON object of settings", id="cut-short"),
    pytest.param(b'{"words": 1' + b"0" * 5000 + b"}", None, "Exceeds the limit (4300 digits)",
                 id="a-number-of-5000-digits"),
])
def test_a_body_that_is_not_unicode_json_gets_a_400(server, body, field, needle):
    before = server.log()
    status, _, text = call(server.port, "POST", "/api/generate", body,
                           {"Content-Type": "application/json"})
    assert status == 400, text[:300]
    answer = json.loads(text)
    assert answer["field"] == field and needle in answer["error"], answer
    assert new_log(server, before) == ""


def test_a_long_prompt_holds_up_no_other_request(server):
    """The longest prompt allowed, a word and 99,990 dots, is read in a worker thread and in
    time linear in its length: a GET /api/info sent meanwhile is answered at once."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.request("POST", "/api/generate", json.dumps({"prompt": "word" + "." * 99_990,
                                                            "words": 1}),
                       {"Content-Type": "application/json"})
    time.sleep(0.2)  # the server is reading the prompt
    started = time.monotonic()
    assert call(server.port, "GET", "/api/info", timeout=120)[0] == 200
    waited = time.monotonic() - started
    response = connection.getresponse()
    kinds = [kind for kind, _ in events(response.read().decode())]
    connection.close()
    assert response.status == 200 and kinds == ["prompt", "token", "done"]
    assert waited < 5, f"GET /api/info waited {waited:.1f} s for the prompt to be read"


def test_a_surrogate_pair_is_text_like_any_other(server):
    status, _, text = call(server.port, "POST", "/api/generate",
                           b'{"prompt": "the \\ud83d\\ude00 cat", "words": 2}',
                           {"Content-Type": "application/json"})
    assert status == 200 and events(text)[0][1]["unknown_words"] == ["\U0001F600"]


def test_a_client_that_leaves_mid_body_leaves_no_traceback(server):
    before = server.log()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_post_head(server.port, "Content-Length: 1000") + b'{"prompt": "th')
        time.sleep(0.3)  # the server is waiting for the rest of the body
    assert call(server.port, "GET", "/api/info")[0] == 200  # answered after the disconnect
    time.sleep(0.3)
    assert new_log(server, before) == ""


# ---------------------------------------------------------------------- options


@pytest.mark.parametrize("args, needle", [
    (["--port", "70000"], "argument --port: expected a port from 0 to 65535, got '70000'"),
    (["--port", "-1"], "argument --port: expected a port from 0 to 65535"),
    (["--allow-origin", "evil.example"], "argument --allow-origin: expected an origin such as"),
    (["--allow-origin", "http://localhost:5173/app"], "argument --allow-origin: expected an"),
    (["--allow-host", "box lan"], "argument --allow-host: expected a host name"),
])
def test_bad_serve_options_are_usage_errors(tiny_checkpoint, args, needle):
    root, _, _ = tiny_checkpoint
    done = subprocess.run([sys.executable, "-m", "lstmlm", "serve", "--model",
                           str(root / "model.pt"), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert "usage: python -m lstmlm serve" in done.stderr and "Traceback" not in done.stderr


def test_listening_beyond_loopback_warns_and_answers_more_hosts(tiny_checkpoint, tmp_path):
    root, _, _ = tiny_checkpoint
    args = ["--model", str(root / "model.pt"), "--host", "0.0.0.0", "--allow-host",
            "box.example", "--allow-origin", "http://localhost:5173"]
    with ServeProcess(args, tmp_path / "stderr.log") as server:  # spoken to on 127.0.0.1
        assert "warning: listening on 0.0.0.0" in server.log()
        assert "anyone who can reach it on the network" in server.log()
        port = server.port
        for host, status in (("box.example", 200), (f"192.0.2.7:{port}", 200),
                             (f"127.0.0.1:{port}", 200), ("evil.example", 403)):
            assert call(port, "GET", "/api/info", None, {"Host": host})[0] == status, host
        # the allowed page: its browser's preflight, then the request, both labelled for it
        preflight = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"}
        status, headers, _ = call(port, "OPTIONS", "/api/generate", None, preflight)
        assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:5173"
        status, headers, text = call(port, "POST", "/api/generate", SETTINGS,
                                     {"Origin": "http://localhost:5173",
                                      "Content-Type": "application/json"})
        assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:5173"
        assert call(port, "POST", "/api/generate", SETTINGS,
                    {"Origin": "http://localhost:5174"})[0] == 403


def _refuse(constant: str):
    raise AssertionError(f"{constant} is not JSON")


def test_the_checkpoint_metadata_is_served_as_json_or_refused_at_start(tiny_checkpoint,
                                                                       tmp_path):
    """NaN in the metadata is served as null (JSON has no NaN: Starlette gave a 500); a
    structure shared with itself 60 levels deep (2**60 values to walk: /api/info and the
    page, which fetches it, hung, and Ctrl-C with them) stops the command in one line."""
    from helpers_hostile import self_sharing

    from lstmlm.core.checkpoint import save_checkpoint

    _, model, vocab = tiny_checkpoint
    save_checkpoint(tmp_path / "nan.pt", model, vocab, {"epoch": 2, "valid_ppl": float("nan")})
    with ServeProcess(["--model", str(tmp_path / "nan.pt")], tmp_path / "nan.log") as server:
        status, _, text = call(server.port, "GET", "/api/info")
        assert status == 200, text[-300:]
        assert json.loads(text, parse_constant=_refuse)["info"] == {"epoch": 2, "valid_ppl": None}
        assert call(server.port, "GET", "/")[0] == 200
    save_checkpoint(tmp_path / "deep.pt", model, vocab, {"deep": self_sharing(60)})
    done = subprocess.run([sys.executable, "-m", "lstmlm", "serve", "--port", "0", "--model",
                           str(tmp_path / "deep.pt")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "its metadata holds more than 1,000 values" in done.stderr


def test_loopback_gives_no_warning(server):
    assert "warning" not in server.log()


# ---------------------------------------------------------------------- Ctrl-C


def _open_stream(port: int) -> http.client.HTTPResponse:
    """A slow stream of many words, read up to its first word."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/api/generate", json.dumps({"prompt": "the", "words": 1000}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    seen = b""
    while b"event: token" not in seen:
        seen += response.read1(4096)
    return response


def _stall_an_upload(port: int):
    """A client that sends half its body and then nothing: a request that never ends."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(_post_head(port, "Content-Length: 1000") + b'{"prompt": "th')
    return sock


def test_ctrl_c_ends_open_streams_promptly(tiny_checkpoint, tmp_path):
    root, _, _ = tiny_checkpoint
    with ServeProcess(["--model", str(root / "model.pt"), "--delay", "0.2"],
                      tmp_path / "stderr.log") as server:
        response = _open_stream(server.port)  # 1000 words, 0.2 s apart: 200 s if let run
        stalled = _stall_an_upload(server.port)
        time.sleep(0.3)
        started = time.monotonic()
        server.interrupt()
        rest = response.read().decode()  # the stream ends, and says why
        assert time.monotonic() - started < 5, "the stream ran on after Ctrl-C"
        assert "event: error" in rest and "the server is stopping" in rest
        assert server.process.wait(timeout=20) == 130  # the stalled upload is cut off too
        stalled.close()
        log = server.log()
    assert log.startswith("stopping: ending 1 open stream (Ctrl-C again quits at once)"), log
    assert "Traceback" not in log and "CancelledError" not in log
    assert len(log.splitlines()) <= 4, log


def test_a_second_ctrl_c_quits_at_once_without_a_traceback(tiny_checkpoint, tmp_path):
    root, _, _ = tiny_checkpoint
    with ServeProcess(["--model", str(root / "model.pt"), "--delay", "0.2"],
                      tmp_path / "stderr.log") as server:
        response = _open_stream(server.port)
        stalled = _stall_an_upload(server.port)
        time.sleep(0.3)
        server.interrupt()
        time.sleep(0.3)
        started = time.monotonic()
        server.interrupt()
        assert server.process.wait(timeout=20) == 130
        assert time.monotonic() - started < 2.5, "the second Ctrl-C did not quit at once"
        response.close()
        stalled.close()
        log = server.log()
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert len(log.splitlines()) <= 4, log
