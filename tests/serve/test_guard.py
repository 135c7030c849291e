"""The guard: host, origin, token and body size are checked before a byte of the body is read;
only JPEG, PNG and WebP are decoded, on the inference thread, after admission."""

from __future__ import annotations

import asyncio
import io
import socket
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import running


def _raw(url: str, request: bytes, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes (headers only, no body) and read the answer the server sends, and closes, before any body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(request)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def _post_headers(path: str, length: int, token: str | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
             "Content-Type: multipart/form-data; boundary=x"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_token_and_declared_length_are_refused_before_the_body_is_sent(serve_backbone):
    """1.5 GB declared, nothing sent: the answer comes at once (the server never waits for the body)."""
    from dinomask.serve.app import ServeConfig, create_app

    with running(create_app(serve_backbone, ServeConfig(token="s3cret", max_upload_bytes=1024 * 1024))) as url:
        no_token = _raw(url, _post_headers("/v1/remove?reference=x", 1_500_000_000))
        assert no_token.startswith(b"HTTP/1.1 401")
        too_big = _raw(url, _post_headers("/v1/remove?reference=x", 1_500_000_000, token="s3cret"))
        assert too_big.startswith(b"HTTP/1.1 413") and b"limit" in too_big


def test_a_streamed_body_is_cut_off_at_the_budget(serve_backbone):
    """A chunked body (no Content-Length) is counted as it arrives: 413 once past the budget, long
    before the client has sent its 1.5 GB."""
    from dinomask.serve.app import ServeConfig, create_app

    config = ServeConfig(max_upload_bytes=1024 * 1024)
    sent = [0]

    def body():  # a well-formed multipart file part that never ends
        yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="f.png"\r\nContent-Type: image/png\r\n\r\n'
        chunk = b"\0" * (1024 * 1024)
        for _ in range(1500):
            sent[0] += len(chunk)
            yield chunk

    with running(create_app(serve_backbone, config)) as url:
        try:
            response = httpx.post(f"{url}/v1/remove", params={"reference": "x"}, content=body(),
                                  headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=30)
            assert response.status_code == 413, response.text
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the server answered and closed while the client was still writing
    assert sent[0] < 64 * 1024 * 1024, f"the client got {sent[0]} bytes out before the server stopped it"


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def box_ref(server) -> str:
    painted = np.zeros((140, 140, 3), np.uint8)
    painted[30:110, 30:110] = (200, 120, 40)
    response = httpx.post(f"{server}/v1/references", files={"image": ("p.png", _png(painted), "image/png")},
                          data={"background": "black"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PPM", "ICO", "GIF"])
def test_only_jpeg_png_and_webp_are_decoded(server, box_ref, fmt):
    frame = np.full((64, 64, 3), 90, np.uint8)
    response = httpx.post(f"{server}/v1/remove", params={"reference": box_ref},
                          files={"image": (f"f.{fmt.lower()}", _png(frame, fmt), "application/octet-stream")})
    assert response.status_code == 415 and "JPEG, PNG or WebP" in response.json()["detail"]
    for fmt in ("JPEG", "PNG", "WEBP"):
        ok = httpx.post(f"{server}/v1/remove", params={"reference": box_ref},
                        files={"image": ("f", _png(frame, fmt), "application/octet-stream")})
        assert ok.status_code == 200, (fmt, ok.text)


def test_uploads_are_decoded_on_the_inference_thread_after_admission(server, box_ref, monkeypatch):
    import dinomask.serve.app as app_module

    threads = []
    real = app_module.decode_upload

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "decode_upload", spy)
    frame = _png(np.full((64, 64, 3), 90, np.uint8))
    assert httpx.post(f"{server}/v1/remove", params={"reference": box_ref},
                      files={"image": ("f.png", frame, "image/png")}).status_code == 200
    painted = np.zeros((140, 140, 3), np.uint8)
    painted[30:110, 30:110] = 200
    created = httpx.post(f"{server}/v1/references", files={"image": ("p.png", _png(painted), "image/png"),
                                                           "mask": ("m.png", _png(painted[:, :, 0]), "image/png")})
    assert created.status_code == 201
    httpx.delete(f"{server}/v1/references/{created.json()['id']}")
    assert threads and all(name.startswith("dinomask-infer") for name in threads), threads


def test_hosts_and_origins_outside_the_allow_list_are_refused(serve_backbone):
    """A DNS-rebinding page reaches the server under its own name, and a foreign page sends its Origin."""
    from dinomask.serve.app import ServeConfig, create_app

    with running(create_app(serve_backbone, ServeConfig())) as url:
        assert httpx.get(f"{url}/v1/health").status_code == 200
        assert httpx.get(f"{url}/v1/health", headers={"Host": "localhost"}).status_code == 200
        rebound = httpx.get(f"{url}/v1/health", headers={"Host": "attacker.example:8000"})
        assert rebound.status_code == 400 and "--allow-host attacker.example" in rebound.json()["detail"]
        foreign = httpx.get(f"{url}/v1/references", headers={"Origin": "https://attacker.example"})
        assert foreign.status_code == 403
        assert httpx.get(f"{url}/v1/health", headers={"Origin": url}).status_code == 200

        import websockets
        from websockets.exceptions import InvalidStatus

        async def ws(origin):
            async with websockets.connect(url.replace("http", "ws") + "/v1/stream?reference=x", origin=origin) as sock:
                return await sock.recv()

        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(ws("https://attacker.example"))
        assert refused.value.response.status_code == 403
        assert "unknown reference" in asyncio.run(ws(url))  # same origin gets through to the endpoint

        async def ws_host(host):  # a rebinding page's WebSocket: 400, as HTTP
            async with websockets.connect(url.replace("http", "ws") + "/v1/stream?reference=x",
                                          additional_headers={"Host": host}) as sock:
                return await sock.recv()

        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(ws_host("attacker.example"))
        assert refused.value.response.status_code == 400

    with running(create_app(serve_backbone, ServeConfig.for_bind("0.0.0.0", ("camera.lan",)))) as url:
        assert httpx.get(f"{url}/v1/health", headers={"Host": "camera.lan:8000"}).status_code == 200
        assert httpx.get(f"{url}/v1/health", headers={"Host": "other.lan"}).status_code == 400


def test_a_wildcard_bind_needs_the_allowed_names():
    from dinomask.serve.app import ServeConfig

    with pytest.raises(ValueError, match="--allow-host"):
        ServeConfig.for_bind("0.0.0.0")
    assert ServeConfig.for_bind("192.168.1.5").host_allowed("192.168.1.5")
    assert ServeConfig.for_bind("0.0.0.0", ("*",)).host_allowed("anything.example")


def test_the_reference_limit_refuses_instead_of_evicting(serve_backbone):
    from dinomask.serve.app import ServeConfig, create_app

    painted = np.zeros((84, 84, 3), np.uint8)
    painted[20:64, 20:64] = 200
    files = {"image": ("p.png", _png(painted), "image/png")}
    with running(create_app(serve_backbone, ServeConfig(max_references=2))) as url:
        ids = [httpx.post(f"{url}/v1/references", files=files, data={"background": "black"}).json()["id"] for _ in range(2)]
        third = httpx.post(f"{url}/v1/references", files=files, data={"background": "black"})
        assert third.status_code == 409 and "--max-references" in third.json()["detail"]
        assert all(httpx.get(f"{url}/v1/references/{i}").status_code == 200 for i in ids)  # nothing evicted
        httpx.delete(f"{url}/v1/references/{ids[0]}")
        assert httpx.post(f"{url}/v1/references", files=files, data={"background": "black"}).status_code == 201


def test_openapi_documents_the_real_error_bodies_and_auth_only_when_set(serve_backbone, server):
    from dinomask.serve.app import ServeConfig, create_app

    schema = httpx.get(f"{server}/openapi.json").json()
    remove = schema["paths"]["/v1/remove"]["post"]
    assert {"400", "403", "404", "413", "415", "422", "503"} <= set(remove["responses"])
    assert "401" not in remove["responses"] and "security" not in remove
    problems = schema["components"]["schemas"]["ParameterProblem"]["properties"]
    assert set(problems) == {"parameter", "problem"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    bad = httpx.post(f"{server}/v1/remove", params={"reference": "x", "threshold": "high"},
                     files={"image": ("f.png", b"x", "image/png")})
    assert bad.status_code == 422 and bad.json()["detail"][0]["parameter"] == "threshold"
    with running(create_app(serve_backbone, ServeConfig(token="s3cret"))) as url:
        secured = httpx.get(f"{url}/openapi.json").json()
        assert "security" in secured["paths"]["/v1/remove"]["post"]
        assert "401" in secured["paths"]["/v1/remove"]["post"]["responses"]


def test_origin_null_is_refused_on_every_endpoint_unless_named(serve_backbone):
    """A sandboxed iframe on any web site sends ``Origin: null``: a tokenless local server must refuse
    it on every route (HTTP and WebSocket alike), with or without '*', unless ``null`` is named."""
    from dinomask.serve.app import ServeConfig, create_app

    app = create_app(serve_backbone, ServeConfig())
    routes = sorted({(method, route.path) for route in app.routes for method in getattr(route, "methods", None) or ()
                     if method in ("GET", "POST", "DELETE", "PUT")})
    assert len(routes) >= 8, routes
    import websockets
    from websockets.exceptions import InvalidStatus

    with running(app) as url:
        for method, path in routes:
            concrete = path.replace("{reference_id}", "x").replace("{", "").replace("}", "")
            answer = httpx.request(method, f"{url}{concrete}", headers={"Origin": "null"})
            assert answer.status_code == 403, (method, path, answer.status_code)
            assert "--allow-host null" in answer.json()["detail"]
        assert httpx.get(f"{url}/v1/references", headers={"Origin": "NULL"}).status_code == 403

        async def ws():
            async with websockets.connect(url.replace("http", "ws") + "/v1/stream?reference=x", origin="null") as sock:
                return await sock.recv()

        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(ws())
        assert refused.value.response.status_code == 403
    with running(create_app(serve_backbone, ServeConfig(allowed_hosts=("*",)))) as url:  # '*' is any host, not null
        assert httpx.get(f"{url}/v1/references", headers={"Origin": "null"}).status_code == 403
    with running(create_app(serve_backbone, ServeConfig.for_bind("127.0.0.1", ("null",)))) as url:
        assert httpx.get(f"{url}/v1/references", headers={"Origin": "null"}).status_code == 200
