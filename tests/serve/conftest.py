"""A real uvicorn server on 127.0.0.1 (free port, background thread) around a tiny random model."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, **options):
    """Serve ``app`` as ``dinomask serve`` does (``server_options``), on a free loopback port."""
    import uvicorn

    from dinomask.serve.app import server_options

    port = free_port()
    options = {**server_options(app.state.config), **options}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", ws="websockets-sansio",
                                           **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serve_backbone(tiny_model_dir):
    from dinomask.backbones import load_backbone

    return load_backbone(str(tiny_model_dir), device="cpu", runtime="torch", dtype="float32")


@pytest.fixture(scope="module")
def server(serve_backbone):
    from dinomask.serve.app import ServeConfig, create_app

    config = ServeConfig(max_upload_bytes=3 * 1024 * 1024, max_pixels=5_000_000, queue_size=8)
    with running(create_app(serve_backbone, config)) as url:
        yield url
