"""What every request to the annotation page passes before the app sees it, and what every
answer carries: an ASGI middleware around the FastAPI app.

- **Host**: without an access token (loopback, the default) the page is protected only by
  being reachable from this machine alone. A web page elsewhere can still get around that by
  DNS rebinding (its own name re-pointed at 127.0.0.1, so the browser sends the page's
  requests here under the attacker's name), so a request is served only when its ``Host``
  names this machine: ``localhost``, a loopback address, or the address the server is bound
  to. With a token, the token is the defence and any name is accepted (``--host 0.0.0.0`` is
  reached under whatever name the machine has on the network).
- **Origin**: a request that says which page sent it (browsers add ``Origin`` to every POST)
  is served only when that page is the annotation page itself, so another site open in the
  same browser cannot post answers (cross-site request forgery), token or not.
- **Size**: a request body is at most :data:`MAX_BODY` bytes (an answer is a few hundred);
  a larger one gets HTTP 413 before it is read into memory.
- **Headers** on every response, errors included: a Content-Security-Policy that lets the page
  run only its own script and style and talk only to its own server, no framing by other
  pages (clickjacking), no content-type guessing, no Referer (the address may carry the
  token), and no caching of stories.

Refusals say what is wrong in one sentence and never repeat what was sent.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

#: the largest request body served, in bytes: an answer (name of 100, comment of 2,000
#: characters, even with every character escaped as \\uXXXX) is far smaller
MAX_BODY = 64 * 1024

#: sent with every response
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       b"form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def host_name(netloc: str) -> str:
    """The host part of ``Host``/``Origin``'s ``name[:port]`` (``[v6]:port`` too), lower case."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else ""
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: the checks above, then ``app``. ``bound``: the address the server
    listens on; ``check_host``: whether ``Host`` must name this machine (no token)."""

    def __init__(self, app, *, bound: str, check_host: bool, max_body: int = MAX_BODY):
        self.app = app
        self.bound = host_name(bound if ":" not in bound else f"[{bound}]")
        self.check_host = check_host
        self.max_body = max_body

    def _allowed_host(self, host: str) -> bool:
        return is_loopback(host) or host == self.bound

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        async def refuse(status: int, sentence: str) -> None:
            body = json.dumps({"detail": sentence}).encode()
            await send_with_headers({"type": "http.response.start", "status": status,
                                     "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send_with_headers({"type": "http.response.body", "body": body})

        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), value)  # the first of a repeated header
        host = headers.get(b"host", b"").decode("latin-1")
        if self.check_host and not self._allowed_host(host_name(host)):
            return await refuse(403, "This page answers only at the address onceupon annotate printed (127.0.0.1 or localhost).")
        origin = headers.get(b"origin")
        if origin is not None and urlsplit(origin.decode("latin-1")).netloc.lower() != host.strip().lower():
            return await refuse(403, "Answers are taken only from the annotation page itself, not from another site.")
        too_big = f"A request to this page is at most {self.max_body // 1024} KiB; an answer is far smaller."
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            return await refuse(400, "The request's Content-Length is not a number.")
        if declared > self.max_body:
            return await refuse(413, too_big)

        # Read the body here (bounded, whatever Content-Length said or if chunked), then hand
        # it to the app in one piece.
        chunks, size, more = [], 0, scope["method"] not in ("GET", "HEAD")
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await refuse(413, too_big)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)
