"""A local web page to play with a trained model: ``python -m lstmlm serve``.

Needs the ``serve`` extra (Starlette and uvicorn: ``pip install -e '.[serve]'`` or
``make serve``). Routes:

    GET /                 the page (lstmlm/static/index.html)
    GET /api/info         the model, the vocabulary's scheme, the settings' defaults
    POST /api/generate    a JSON object {"prompt": ..., "words": ..., "temperature": ...,
                          "top_k", "top_p", "seed", "allow_unk", "stop_at_eos"} (numbers or
                          strings, as typed in the page; left out: the default) answered
                          by a text/event-stream: one "prompt" event (its unknown words),
                          one "token" event per generated token (the token and the text to
                          append), then "done". A setting it refuses is an HTTP 400 with
                          {"error", "field"}, before anything is generated.

Settings are read into lstmlm.options.SamplingOptions, the same class and checks as the
command and params.yaml. Each token is drawn in a worker thread; a client that goes away
stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import typing
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .errors import LstmlmError
from .generate import Generator
from .options import SamplingOptions
from .text import Detokeniser

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_PROMPT_CHARS = 100_000


class SettingError(LstmlmError, ValueError):
    """A setting from the page or the API that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass
class ServerState:
    """What the server holds: the generator, its limits, and counters for tests."""

    generator: Generator
    max_words: int = 2000
    delay: float = 0.0      # seconds between tokens, to watch the text arrive
    running: int = 0        # streams being generated now
    generated: int = 0      # tokens generated since the start


# ---------------------------------------------------------------------- settings

_HINTS = typing.get_type_hints(SamplingOptions)


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
        raise SettingError(name, f"{name}: {text!r} is not allowed; expected {expected}") from None


def read_settings(query: Any, max_words: int) -> tuple[str, SamplingOptions]:
    """(prompt, options) from a request's JSON object; SettingError names the field it
    refuses."""
    if not isinstance(query, dict):
        raise SettingError("prompt", "expected a JSON object of settings")
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
        options = SamplingOptions(**values)
    except LstmlmError as err:  # ParamsError: "sample.top_p: 1.5 is not allowed; ..."
        key, _, why = str(err).partition(": ")
        field = key.rsplit(".", 1)[-1]
        raise SettingError(field, f"{field}: {why}") from None
    if options.words > max_words:
        raise SettingError("words", f"words: {options.words} is not allowed; at most "
                                    f"{max_words} on this server")
    return prompt, options


# ---------------------------------------------------------------------- streaming


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(request: Request, state: ServerState, prompt: str,
                  options: SamplingOptions) -> AsyncIterator[str]:
    """The event stream of one generation; stops when the client goes away."""
    generator = state.generator
    ids, unknown = generator.encode_prompt(prompt)
    yield _event("prompt", {"unknown_words": unknown, "words": options.words})
    tokens: Iterator[str] = generator.stream_ids(ids, options)
    detokeniser = Detokeniser.after(prompt, generator.vocab.scheme)
    state.running += 1
    count, started = 0, time.perf_counter()
    try:
        while True:
            if await request.is_disconnected():
                return  # the page was closed or stopped: draw nothing more
            token = await anyio.to_thread.run_sync(next, tokens, None)
            if token is None:
                break
            count += 1
            state.generated += 1
            yield _event("token", {"token": token, "text": detokeniser.push(token)})
            if state.delay:
                await asyncio.sleep(state.delay)
        yield _event("done", {"words": count,
                              "seconds": round(time.perf_counter() - started, 3)})
    except LstmlmError as err:  # e.g. every word banned: said in the stream, no traceback
        yield _event("error", {"error": str(err), "field": None})
    finally:
        state.running -= 1
        tokens.close()


# ---------------------------------------------------------------------- routes


async def page(request: Request) -> Response:
    return FileResponse(PAGE, media_type="text/html; charset=utf-8")


async def info(request: Request) -> Response:
    state: ServerState = request.app.state.lstmlm
    generator = state.generator
    defaults = dataclasses.asdict(SamplingOptions())
    return JSONResponse({"scheme": generator.vocab.scheme, "vocab_size": len(generator.vocab),
                         "model": dataclasses.asdict(generator.model.config),
                         "info": generator.info, "defaults": defaults,
                         "max_words": state.max_words})


async def generate(request: Request) -> Response:
    state: ServerState = request.app.state.lstmlm
    try:
        prompt, options = read_settings(await request.json(), state.max_words)
    except json.JSONDecodeError:
        return JSONResponse({"error": "expected a JSON object of settings", "field": None},
                            status_code=400)
    except SettingError as err:
        return JSONResponse({"error": str(err), "field": err.field}, status_code=400)
    return StreamingResponse(_events(request, state, prompt, options),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def create_app(generator: Generator, *, max_words: int = 2000, delay: float = 0.0) -> Starlette:
    """The ASGI application for one generator."""
    app = Starlette(routes=[Route("/", page), Route("/api/info", info),
                            Route("/api/generate", generate, methods=["POST"])])
    app.state.lstmlm = ServerState(generator, max_words, delay)
    return app
