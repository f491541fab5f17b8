"""A local web page to play with a trained model: ``python -m lstmlm serve`` (the serve
extra: Starlette and uvicorn). docs/serving.md has the routes, the settings and the checks.

    GET /                 the page (static/index.html)
    GET /api/info         the model, its vocabulary, the settings' defaults, open streams
    POST /api/generate    settings as JSON -> a text/event-stream: "prompt" (unknown words,
                          the seed used), one "token" per token, "done"; or a 400 naming
                          the setting refused, before anything is generated

Settings are read into lstmlm.generate.options.SamplingOptions, the same class and checks
as the command and params.yaml. Who may call is checked first (lstmlm.serve.access).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import socket
import time
import typing
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lstmlm.core.errors import LstmlmError, shorten, shown
from lstmlm.generate.generator import Generator
from lstmlm.generate.options import FRESH, SamplingOptions, seeded
from lstmlm.generate.text import Detokeniser
from lstmlm.serve.access import Access, RequestGuard

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_PROMPT_CHARS = 100_000
# Room for the longest prompt written with JSON escapes (12 bytes a character at worst).
MAX_BODY_BYTES = 2 * 1024 * 1024
# After the first Ctrl-C, how long streams and uploads may take to end before they are cut.
SHUTDOWN_SECONDS = 3.0
# The server's defaults, the command's and the API's: a fresh text unless a seed is set.
DEFAULTS = FRESH


class SettingError(LstmlmError, ValueError):
    """A setting from the page or the API that cannot be used; ``field`` names it (None:
    the body as a whole)."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass
class ServerState:
    """What the server holds: the generator, its limits, and whether it is stopping."""

    generator: Generator
    max_words: int = 2000
    delay: float = 0.0      # seconds between tokens, to watch the text arrive
    open_streams: int = 0   # generations streaming now (told on Ctrl-C and by /api/info)
    stopping: bool = False  # set by Ctrl-C: streams end at their next token

    async def pause(self) -> None:
        """Wait ``delay`` seconds, or less when the server starts stopping."""
        end = time.monotonic() + self.delay
        while not self.stopping and time.monotonic() < end:
            await asyncio.sleep(min(0.05, end - time.monotonic()))


# ---------------------------------------------------------------------- settings

_HINTS = typing.get_type_hints(SamplingOptions)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _convert(name: str, value: Any) -> Any:
    """A setting as the SamplingOptions field's type: JSON values as they are (checked by
    SamplingOptions), text as typed in the page converted."""
    kind = typing.get_args(_HINTS[name]) or (_HINTS[name],)
    if not isinstance(value, str):
        return value
    text = value
    if type(None) in kind and text.strip().lower() in ("", "none", "random"):
        return None
    try:
        if bool in kind:
            return {"true": True, "1": True, "on": True,
                    "false": False, "0": False, "off": False}[text.strip().lower()]
        return int(text) if int in kind else float(text)
    except (KeyError, ValueError):
        what = {bool: "true or false", int: "an integer", float: "a number"}
        expected = next(what[k] for k in kind if k in what)
        raise SettingError(name, f"{name}: {shown(text)} is not allowed; expected {expected}") from None


def _refuse_lone_surrogates(query: dict[str, Any]) -> None:
    """JSON may escape half of a UTF-16 pair ("\\ud800"), which no UTF-8 text can hold: it
    would break the answer halfway (the stream is UTF-8), so it is refused here."""
    for key, value in query.items():
        if _LONE_SURROGATE.search(key):
            raise SettingError(None, f"the setting {ascii(key)} holds a lone surrogate (half "
                                     "of a UTF-16 pair); expected Unicode text")
        if isinstance(value, str) and _LONE_SURROGATE.search(value):
            raise SettingError(key, f"{key}: holds a lone surrogate (half of a UTF-16 pair, "
                                    "such as \\ud800); expected Unicode text")


def read_settings(query: Any, max_words: int) -> tuple[str, SamplingOptions]:
    """(prompt, options) from a request's JSON object, with a seed drawn when it gives
    none; SettingError names the field it refuses."""
    if not isinstance(query, dict):
        raise SettingError("prompt", "expected a JSON object of settings")
    _refuse_lone_surrogates(query)
    names = {f.name for f in dataclasses.fields(SamplingOptions)}
    unknown = sorted(set(query) - names - {"prompt"})
    if unknown:
        raise SettingError(unknown[0], f"{unknown[0]}: unknown setting (known: prompt, "
                                       f"{', '.join(sorted(names))})")
    prompt = query.get("prompt", "")
    if not isinstance(prompt, str):
        raise SettingError("prompt", "prompt: expected text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SettingError("prompt", f"prompt: {len(prompt):,} characters is too long; "
                                     f"at most {MAX_PROMPT_CHARS:,} here")
    values = {name: _convert(name, value) for name, value in query.items() if name in names}
    try:
        options = DEFAULTS.replace(**values)
    except LstmlmError as err:  # ParamsError: "sample.top_p: 1.5 is not allowed; ..."
        key, _, why = str(err).partition(": ")
        field = key.rsplit(".", 1)[-1]
        raise SettingError(field, f"{field}: {why}") from None
    if options.words > max_words:
        raise SettingError("words", f"words: {options.words} is not allowed; at most "
                                    f"{max_words} on this server")
    return prompt, seeded(options)


async def read_json(request: Request) -> Any:
    """The request's body as JSON; a body that is not UTF-8 JSON is a SettingError. Its size
    is capped as it is read (MAX_BODY_BYTES: RequestBodyLimitMiddleware raises a 413, see
    create_app)."""
    body = await request.body()
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise SettingError(None, f"the request body is not UTF-8 text (byte {err.start + 1} "
                                 f"is 0x{body[err.start]:02x}); expected a JSON object of "
                                 "settings") from None
    except json.JSONDecodeError as err:
        raise SettingError(None, f"expected a JSON object of settings ({err.msg}, at "
                                 f"character {err.pos + 1})") from None
    except ValueError as err:  # a number of more digits than Python converts (4,300)
        raise SettingError(None, f"expected a JSON object of settings "
                                 f"({shorten(str(err), 80)})") from None
    except RecursionError:
        raise SettingError(None, "expected a JSON object of settings (nested too "
                                 "deeply)") from None


# ---------------------------------------------------------------------- streaming


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _read_prompt(generator: Generator, prompt: str) -> tuple[list[int], list[str], Detokeniser]:
    """The prompt's ids, its unknown words, and the detokeniser for the text after it."""
    ids, unknown = generator.encode_prompt(prompt)
    return ids, unknown, Detokeniser.after(prompt, generator.vocab.scheme)


async def _events(request: Request, state: ServerState, prompt: str,
                  options: SamplingOptions) -> AsyncIterator[str]:
    """The event stream of one generation; stops when the client goes away, or ends
    early (with an "error" event) when the server stops."""
    generator = state.generator
    # A prompt of 100,000 characters takes a while to read: not on the event loop, which
    # must go on answering every other request meanwhile.
    ids, unknown, detokeniser = await anyio.to_thread.run_sync(_read_prompt, generator, prompt)
    yield _event("prompt", {"unknown_words": unknown, "words": options.words,
                            "seed": options.seed})
    tokens: Iterator[str] = generator.stream_ids(ids, options)
    state.open_streams += 1
    count, started = 0, time.perf_counter()
    try:
        while not state.stopping:
            if await request.is_disconnected():
                return  # the page was closed or stopped: draw nothing more
            token = await anyio.to_thread.run_sync(next, tokens, None)
            if token is None:
                yield _event("done", {"words": count,
                                      "seconds": round(time.perf_counter() - started, 3)})
                return
            count += 1
            yield _event("token", {"token": token, "text": detokeniser.push(token)})
            await state.pause()
        yield _event("error", {"error": f"the server is stopping; the text ends after {count} "
                                        "words", "field": None})
    except LstmlmError as err:  # e.g. every word banned: said in the stream, no traceback
        yield _event("error", {"error": str(err), "field": None})
    finally:
        state.open_streams -= 1
        tokens.close()


# ---------------------------------------------------------------------- routes


async def page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html; charset=utf-8")


async def info(request: Request) -> Response:
    state: ServerState = request.app.state.lstmlm
    generator = state.generator
    return JSONResponse({"scheme": generator.vocab.scheme, "vocab_size": len(generator.vocab),
                         "model": dataclasses.asdict(generator.config),
                         "info": generator.info, "defaults": dataclasses.asdict(DEFAULTS),
                         "max_words": state.max_words, "open_streams": state.open_streams})


async def generate(request: Request) -> Response:
    state: ServerState = request.app.state.lstmlm
    try:
        prompt, options = read_settings(await read_json(request), state.max_words)
    except ClientDisconnect:
        return Response(status_code=400)  # it left halfway through its body: no one to tell
    except SettingError as err:
        return JSONResponse({"error": str(err), "field": err.field}, status_code=400)
    return StreamingResponse(_events(request, state, prompt, options),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class _CloseAfter413:
    """ASGI middleware: a 413 closes the connection. RequestBodyLimitMiddleware answers
    before the body is read, but keeps the connection open for the rest of it; closed, the
    client learns at once that nothing more will be read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def closing(message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing if scope["type"] == "http" else send)


def create_app(generator: Generator, *, max_words: int = 2000, delay: float = 0.0,
               access: Access = Access()) -> Starlette:
    """The ASGI application for one generator. Requests pass the Host and Origin checks
    (RequestGuard), then CORS for ``access.origins``, then the body cap (413, "Content Too
    Large")."""
    middleware = [
        Middleware(RequestGuard, access=access),
        Middleware(CORSMiddleware, allow_origins=sorted(access.origins),
                   allow_methods=["GET", "POST"]),
        Middleware(_CloseAfter413),
        Middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY_BYTES),
    ]
    app = Starlette(routes=[Route("/", page), Route("/api/info", info),
                            Route("/api/generate", generate, methods=["POST"])],
                    middleware=middleware)
    app.state.lstmlm = ServerState(generator, max_words, delay)
    return app


# ---------------------------------------------------------------------- running


class _Server(uvicorn.Server):
    """uvicorn's server, with a prompt and quiet Ctrl-C (or SIGTERM). Alone, uvicorn waits
    in silence for every stream to end, and a second Ctrl-C cancels them with a traceback
    each. Here the first one says so and ends the streams at their next token; whatever
    still runs SHUTDOWN_SECONDS later, or at a second Ctrl-C, is cut off without a
    traceback (_EndWhenCancelled)."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.lstmlm = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            streams = self.lstmlm.open_streams
            # os.write, not print: a signal handler may interrupt a print to stderr.
            os.write(2, f"stopping: ending {streams} open stream{'s' * (streams != 1)} "
                        "(Ctrl-C again quits at once)\n".encode())
        self.lstmlm.stopping = True
        super().handle_exit(sig, frame)


class _EndWhenCancelled:
    """ASGI wrapper: a request that uvicorn cancels as the server stops (at a second
    Ctrl-C, or still running SHUTDOWN_SECONDS after the first) gets a proper ending, a 503
    or the end of its stream, instead of a traceback in the log."""

    def __init__(self, app: Starlette, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, last = False, None

        async def tracked(message) -> None:
            nonlocal started, last
            started = started or message["type"] == "http.response.start"
            last = message
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not self.state.stopping:
                raise
            if not started:
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            if last is None or last["type"] != "http.response.body" or last.get("more_body"):
                await send({"type": "http.response.body",
                            "body": b"" if started else b"the server is stopping"})


def run(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C (see _Server)."""
    state: ServerState = app.state.lstmlm
    config = uvicorn.Config(_EndWhenCancelled(app, state), log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=SHUTDOWN_SECONDS)
    _Server(config, state).run(sockets=[sock])
