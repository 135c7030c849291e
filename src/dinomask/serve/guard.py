"""The checks every request passes before the app reads a byte of its body (pure ASGI middleware).

In order, for HTTP requests and WebSocket handshakes alike:

1. ``Host`` must name an allowed host (400), and a browser's ``Origin``, when sent, too (403):
   a DNS-rebinding page or another site cannot drive a server that listens on localhost.
   ``Origin: null`` (what a sandboxed iframe on any site, or a local file, sends) is refused
   too unless ``null`` is named among the allowed hosts: ``'*'`` does not include it.
2. The bearer token, when one is set, on ``/v1`` and ``/metrics`` (401). WebSockets may carry it
   as ``?token=`` because browsers cannot set headers on them.
3. ``Content-Length`` over the body budget is refused at once (413); a body without a length is
   counted as it arrives and refused the moment it passes the budget, so nothing larger is
   ever buffered or written to a temporary file.

Refusals are JSON ``{"detail": "..."}`` like every other error of the API; a refused WebSocket
handshake gets the same status and body as an HTTP request would (401, 403, 400), through ASGI's
WebSocket denial-response extension, which uvicorn and Starlette's test client offer.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from dinomask.serve.config import ServeConfig

PROTECTED_PREFIXES = ("/v1/", "/metrics")


def host_of(value: str) -> str:
    """``name:port`` / ``[v6]:port`` / ``name`` -> the host part."""
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class Guard:
    """ASGI middleware enforcing host, origin, token and body-size rules of one :class:`ServeConfig`.

    ``on_refuse(status)`` is called for every refusal (the app counts them as errors).
    """

    def __init__(self, app, config: ServeConfig, on_refuse=None):
        self.app, self.config, self.on_refuse = app, config, on_refuse or (lambda status: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        try:
            self._check(scope, headers)
        except Refused as refusal:
            self.on_refuse(refusal.status)
            if scope["type"] == "websocket":
                if "websocket.http.response" in scope.get("extensions", {}):  # the same status as HTTP (uvicorn, Starlette)
                    return await _respond(send, refusal, "websocket.http.response")
                # a server without the denial extension answers a close before accept with 403
                return await send({"type": "websocket.close", "code": 1008, "reason": refusal.detail[:120]})
            return await _respond(send, refusal)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        return await self._counted(scope, receive, send)

    def _check(self, scope, headers: dict[str, bytes]) -> None:
        config = self.config
        host = host_of(headers.get("host", b"").decode("latin-1"))
        if not config.host_allowed(host):
            raise Refused(400, f"Host {host!r} is not one this server answers to; start it with --allow-host {host or 'NAME'}")
        origin = headers.get("origin")
        if origin is not None and origin.strip().lower() == b"null":  # a sandboxed iframe or file page of any site
            if not config.null_origin_allowed:
                raise Refused(403, "requests from pages with Origin 'null' (sandboxed frames, local files) are not "
                                   "allowed; start the server with --allow-host null to allow them")
        elif origin is not None:
            origin_host = urlsplit(origin.decode("latin-1")).hostname or ""
            if not config.host_allowed(origin_host):
                raise Refused(403, f"requests from pages at {origin_host!r} are not allowed; start the server with "
                                   f"--allow-host {origin_host or 'NAME'} to allow them")
        path = scope.get("path", "")
        if config.token is not None and path.startswith(PROTECTED_PREFIXES):
            if not config.token_matches(_credentials(scope, headers)):
                raise Refused(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        if scope["type"] == "http":
            length = headers.get("content-length")
            if length is not None:
                try:
                    declared = int(length)
                except ValueError:
                    raise Refused(400, f"Content-Length {length[:40]!r} is not a number") from None
                if declared > config.max_body_bytes:
                    raise Refused(413, f"the request body is {declared} bytes; the limit is {config.max_body_bytes}")

    async def _counted(self, scope, receive, send):
        """Run the app with a ``receive`` that refuses the body once it passes the budget."""
        limit = self.config.max_body_bytes
        state = {"seen": 0, "over": False, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    raise Refused(413, f"the request body passed {limit} bytes, the limit")
            return message

        async def guarded_send(message):
            if state["over"]:  # whatever the app made of the cut body, the client learns it was too large
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    self.on_refuse(413)
                    await _respond(send, Refused(413, f"the request body passed {limit} bytes, the limit"))
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Refused as refusal:
            if not state["started"]:
                state["started"] = True
                self.on_refuse(refusal.status)
                await _respond(send, refusal)


def _credentials(scope, headers: dict[str, bytes]) -> bytes | str | None:
    header = headers.get("authorization")
    if header is not None and header[:7].lower() == b"bearer ":
        return header[7:]
    if scope["type"] == "websocket":
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return given[0] if given else None
    return None


async def _respond(send, refusal: Refused, kind: str = "http.response") -> None:
    """The refusal as a JSON response; ``kind`` ``websocket.http.response`` answers a WebSocket
    handshake with it (ASGI's denial-response extension)."""
    body = json.dumps({"detail": refusal.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()]
    await send({"type": f"{kind}.start", "status": refusal.status, "headers": headers})
    await send({"type": f"{kind}.body", "body": body})
