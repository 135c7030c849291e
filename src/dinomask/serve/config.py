"""The limits and settings of one ``dinomask serve``, checked once, before the model loads."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")

# Multipart framing, the label and the background field of one request, on top of its files.
FORM_OVERHEAD_BYTES = 64 * 1024
# The most files one request carries (POST /v1/references: image and mask).
FILES_PER_REQUEST = 2


@dataclass(frozen=True)
class ServeConfig:
    """Limits and settings of one server. Every limit is a budget set before any work starts.

    Attributes:
        token: bearer token required on ``/v1`` and ``/metrics``; None for none.
        max_upload_bytes: one uploaded file or WebSocket frame larger than this gets 413 (or close 1009).
        max_pixels: images with more pixels get 413 (checked from the header, before decoding).
        queue_size: requests waiting or running at once before 503.
        max_references: references held in memory; creating one more gets 409 (nothing is evicted).
        max_feature_bytes: reference features held in memory, teaching history included; a
            reference, click or view that would pass it gets 409.
        retry_after_s: the ``Retry-After`` a 503 carries.
        max_streams: WebSocket streams open at once; one more is closed with 1013 (try later).
        allowed_hosts: the names a request's ``Host`` (and a browser's ``Origin``) may carry; others get
            400 / 403. This stops a DNS-rebinding page from driving a server that has no token.
            ``("*",)`` allows any name; ``null`` allows ``Origin: null`` (never allowed otherwise).
    """

    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    queue_size: int = 4
    max_references: int = 64
    max_feature_bytes: int = 1024 * 1024 * 1024
    retry_after_s: int = 1
    max_streams: int = 8
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS

    def __post_init__(self) -> None:
        if self.token is not None and (not self.token or not self.token.isascii() or not self.token.isprintable()
                                       or " " in self.token):
            raise ValueError("the token must be non-empty printable ASCII without spaces (it travels in an HTTP header)")
        for name in ("max_upload_bytes", "max_pixels", "queue_size", "max_references", "max_streams", "max_feature_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.allowed_hosts:
            raise ValueError("allowed_hosts is empty: no request could reach the server; name at least one host or '*'")
        object.__setattr__(self, "allowed_hosts", tuple(h.strip("[]").lower() for h in self.allowed_hosts))

    @classmethod
    def for_bind(cls, host: str, allow_hosts: tuple[str, ...] = (), **settings) -> "ServeConfig":
        """The config for a server bound to ``host``: loopback names, plus ``host`` itself when it is
        one address, plus ``allow_hosts``. A wildcard bind (0.0.0.0, ::) needs ``allow_hosts`` named."""
        if not allow_hosts and host in WILDCARD_BINDS:
            raise ValueError(f"serving on {host or 'every address'} needs the names clients use: "
                             "--allow-host NAME (repeatable), or --allow-host '*' to accept any Host header")
        named = tuple(LOOPBACK_HOSTS) + ((host,) if host not in WILDCARD_BINDS else ()) + tuple(allow_hosts)
        return cls(allowed_hosts=tuple(dict.fromkeys(named)), **settings)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: every file of one request at its limit, plus the form around them."""
        return FILES_PER_REQUEST * self.max_upload_bytes + FORM_OVERHEAD_BYTES

    @property
    def null_origin_allowed(self) -> bool:
        """``Origin: null`` is allowed only when ``null`` is named (``--allow-host null``): a sandboxed
        iframe on any web site sends it, so ``'*'`` does not include it."""
        return "null" in self.allowed_hosts

    def host_allowed(self, host: str) -> bool:
        """``host`` without its port (``name``, ``1.2.3.4``, ``[::1]``) is one of ``allowed_hosts``."""
        return "*" in self.allowed_hosts or host.strip("[]").lower() in self.allowed_hosts

    def token_matches(self, given: str | bytes | None) -> bool:
        """Constant-time comparison of the bytes; any text (non-ASCII too) is simply not the token."""
        if self.token is None:
            return True
        if given is None:
            return False
        if isinstance(given, str):
            given = given.encode("utf-8", "replace")
        return secrets.compare_digest(given, self.token.encode("ascii"))


def server_options(config: ServeConfig) -> dict:
    """uvicorn settings that bound what one WebSocket client can hold in memory: a message
    holds at most one upload, and at most 2 wait per connection (uvicorn's defaults,
    16 MiB x 32 queued, let three clients add 1.7 GB)."""
    return {"ws_max_size": config.max_upload_bytes + 1024, "ws_max_queue": 2}
