"""``python -m lstmlm serve``: a local web page to write with a trained checkpoint
(lstmlm.serve.app), behind the access checks of lstmlm.serve.access.

Options are parsed and checked before the serve extra (Starlette, uvicorn) is imported,
so ``--help`` and bad values answer at once, and a missing extra is one line.
"""

from __future__ import annotations

import argparse
import sys

from lstmlm.core.errors import LstmlmError, shown
from lstmlm.generate.command import add_model_options, at_least, load_generator

# --port: "argument --port: expected a port from 0 to 65535, got '70000'", exit 2.
port_number = at_least(0, 65535, "a port from 0 to 65535")



def web_origin(text: str) -> str:
    """--allow-origin: a page's origin as browsers send it (scheme://host[:port], lower
    case, the scheme's default port left out)."""
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or port == -1
            or parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc):
        raise argparse.ArgumentTypeError("expected an origin such as http://localhost:5173 "
                                         f"(scheme, host, port; no path), got {shown(text)}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def host_value(text: str) -> str:
    """--allow-host: a host name or address as it appears in a URL."""
    from lstmlm.serve.access import host_name

    name = host_name(text.strip())
    if name is None:
        raise argparse.ArgumentTypeError(f"expected a host name such as box.lan, got {shown(text)}")
    return name


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lstmlm serve",
        description="Serve a local web page to write with a trained checkpoint: a prompt, the "
                    "sampling controls, and the text as it is generated. Needs the serve "
                    "extra (pip install -e '.[serve]', or make serve). Only this machine's "
                    "own pages may use it, unless --host and --allow-* say otherwise "
                    "(docs/serving.md).")
    add_model_options(parser)
    add = parser.add_argument
    add("--host", default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0: every "
             "network, with no password: a warning says so)")
    add("--port", type=port_number, default=8000,
        help="port (default: %(default)s; 0: any free port)")
    add("--allow-host", dest="allow_host", type=host_value, action="append", default=[],
        metavar="NAME", help="also answer requests sent to this host name (a name the "
                             "machine has on the network); repeatable")
    add("--allow-origin", dest="allow_origin", type=web_origin, action="append", default=[],
        metavar="ORIGIN", help="let the page at ORIGIN (e.g. http://localhost:5173) call the "
                               "API from a browser; repeatable")
    add("--max-words", dest="max_words", type=int, default=2000,
        help="the most words one request may ask for (default: %(default)s)")
    add("--delay", type=float, default=0.0,
        help="seconds to wait after each word, to watch the text arrive (default: %(default)s)")
    return parser


def _listen(host: str, port: int):
    """A socket listening on host:port; LstmlmError when it cannot."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as err:
        raise LstmlmError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m lstmlm serve``: see serve_parser()."""
    parser = serve_parser()
    args = parser.parse_args(argv)
    if args.max_words < 1 or not 0 <= args.delay <= 10:
        parser.error("argument --max-words: expected >= 1; --delay: expected 0 to 10 seconds")
    try:
        from lstmlm.serve import app as serve
    except ImportError as err:
        raise LstmlmError(f"python -m lstmlm serve needs the serve extra ({err.name} is "
                          "missing): pip install -e '.[serve]', or make serve") from None
    from lstmlm.serve.access import Access, exposure_warning

    generator = load_generator(args)
    sock = _listen(args.host, args.port)
    address, port = sock.getsockname()[:2]
    access = Access.listening_on(address, args.host, args.allow_host, args.allow_origin)
    app = serve.create_app(generator, max_words=args.max_words, delay=args.delay, access=access)
    warning = exposure_warning(address, port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    shown = f"[{address}]" if ":" in address else address
    print(f"serving {args.model} on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    serve.run(app, sock)
    return 0
