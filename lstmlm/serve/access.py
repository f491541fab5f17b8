"""Who may use the page's server: the Host and Origin checks of local development servers
(Vite, webpack's dev server, Jupyter), for ``python -m lstmlm serve``.

A request whose Origin is neither this server's own page nor an --allow-origin (another
site's form or fetch(): cross-origin requests), or whose Host is not a name no one else can
point here (DNS rebinding), gets a 403 with {"error": reason, "field": null}; docs/serving.md
explains both attacks. Torch- and Starlette-free (plain ASGI), so that the command line can
use it before loading.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import socket
from typing import Any, Awaitable, Callable, Iterable

# Host as browsers send it: a name or an IPv4 address, or an IPv6 address in brackets,
# then an optional port. Anything else (user@host, spaces, paths) is refused.
_HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::\d{1,5})?",
                          re.IGNORECASE)


def host_name(header: str) -> str | None:
    """The name or address in a Host header, lower case and without brackets or port;
    None when it is not a Host header a browser would send."""
    match = _HOST_HEADER.fullmatch(header)
    if match is None:
        return None
    return (match["ipv6"] or match["name"]).lower()


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(name: str) -> bool:
    """localhost, a name under .localhost (browsers resolve those to loopback themselves)
    or a loopback address."""
    address = _address(name)
    if address is not None:
        return address.is_loopback
    return name == "localhost" or name.endswith(".localhost")


@dataclasses.dataclass(frozen=True)
class Access:
    """The Host names and Origins the server accepts (see the module's docstring).
    The default: loopback names, and this server's own page."""

    hosts: frozenset[str] = frozenset()    # more names for Host, lower case ("box.lan")
    any_address: bool = False              # any IP address in Host: listening beyond loopback
    origins: frozenset[str] = frozenset()  # other pages that may call, "http://localhost:5173"

    @classmethod
    def listening_on(cls, address: str, host: str, allow_hosts: Iterable[str] = (),
                     allow_origins: Iterable[str] = ()) -> "Access":
        """For a server bound to ``address`` (the socket's own address) as asked by
        ``--host host``: beyond loopback, the machine's own name and any IP address too."""
        hosts = {name.lower() for name in (host, *allow_hosts) if name}
        beyond = not is_loopback(address)
        if beyond:
            hosts.add(socket.gethostname().lower())
        return cls(frozenset(hosts), beyond, frozenset(o.lower() for o in allow_origins))

    def host_allowed(self, header: str) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if name in self.hosts or is_loopback(name):
            return True
        return self.any_address and _address(name) is not None

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Same-origin (the page this server sent, as the Host header names it), or an
        --allow-origin."""
        origin = origin.lower()
        host = host.lower()
        return origin in (f"http://{host}", f"https://{host}") or origin in self.origins

    def refusal(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """Why a request with these (ASGI) headers is refused, or None to let it through."""
        hosts = [value.decode("latin-1") for key, value in headers if key == b"host"]
        origins = [value.decode("latin-1") for key, value in headers if key == b"origin"]
        if len(hosts) != 1 or not self.host_allowed(hosts[0]):
            shown = hosts[0][:100] if len(hosts) == 1 else f"({len(hosts)} Host headers)"
            return (f"Host {shown} is not allowed here: use localhost or 127.0.0.1, or start "
                    "the server with --allow-host NAME (this check stops DNS rebinding)")
        if len(origins) > 1 or (origins and not self.origin_allowed(origins[0], hosts[0])):
            shown = origins[0][:100] if len(origins) == 1 else "(several Origin headers)"
            return (f"requests from the page at {shown} are not allowed: only this server's "
                    "own page may call it (start the server with --allow-origin ORIGIN to "
                    "allow another page)")
        return None


def exposure_warning(address: str, port: int) -> str | None:
    """What to say when the server listens beyond this machine; None on loopback."""
    if is_loopback(address):
        return None
    return (f"warning: listening on {address} port {port}, beyond this machine: anyone who "
            "can reach it on the network can use this page and its API, with no password. "
            "--host 127.0.0.1 (the default) keeps it to this machine.")


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class RequestGuard:
    """ASGI middleware: a request whose Host or Origin ``access`` refuses gets a 403 with
    the reason, and never reaches the application."""

    def __init__(self, app: ASGIApp, access: Access):
        self.app = app
        self.access = access

    async def __call__(self, scope, receive, send) -> None:
        reason = self.access.refusal(scope["headers"]) if scope["type"] == "http" else None
        if reason is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": reason, "field": None}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
