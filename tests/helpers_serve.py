"""Real servers for the serve tests, on 127.0.0.1 and a free port: the application in a
uvicorn thread (``running``), or ``python -m lstmlm serve`` as a process (``ServeProcess``,
its stderr kept in a file); and HTTP by hand (``call``, ``raw_exchange``) for the requests
a browser or an attacker sends and a client library would tidy up."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def events(body: str) -> list[tuple[str, dict]]:
    """(kind, data) of each server-sent event in a response body."""
    out = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


@contextlib.contextmanager
def running(app):
    """A real uvicorn server for ``app`` on 127.0.0.1 and a free port, in a thread."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(20)


class ServeProcess:
    """``python -m lstmlm serve --port 0 ARGS`` until the ``with`` block ends (SIGINT, then
    kill if it lingers); ``port`` is where it listens, ``log()`` its stderr so far."""

    def __init__(self, args: list[str], log_path: Path, start_timeout: float = 120):
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lstmlm", "serve", "--port", "0", *args],
                stdout=subprocess.PIPE, stderr=log, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], start_timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("serving "):
            self.stop()
            raise AssertionError(f"the server did not start: {line!r}\n{self.log()}")
        self.url = line.split()[3]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text()

    def interrupt(self) -> None:
        """What Ctrl-C in its terminal does."""
        self.process.send_signal(signal.SIGINT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.interrupt()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(20)
        self.process.stdout.close()

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def call(port: int, method: str, path: str, body: str | bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30):
    """One request to 127.0.0.1:port (a Host header in ``headers`` replaces the usual one):
    (status, headers, body as text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def raw_exchange(port: int, *pieces: bytes, timeout: float = 15) -> bytes:
    """Send ``pieces`` over one connection as they are (stopping if the server closes it),
    then read until the server closes; the bytes it sent back. A silent server fails the
    test after ``timeout`` seconds."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in pieces:
                sock.sendall(piece)
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass  # it closed with our unread bytes left over: what it sent came first
        except TimeoutError:
            raise AssertionError(f"no answer within {timeout} s; got {reply[:200]!r}") from None
    return reply
