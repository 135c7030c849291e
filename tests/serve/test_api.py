"""Every endpoint and every error over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import running


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_of(path) -> bytes:
    return path.read_bytes()


@pytest.fixture(scope="module")
def dog_ref(server, davis):
    files = {"image": ("dog.jpg", jpeg_of(davis / "JPEGImages/480p/dog/00000.jpg"), "image/jpeg"),
             "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
    response = httpx.post(f"{server}/v1/references", files=files, data={"label": "dog"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_health_and_openapi(server):
    health = httpx.get(f"{server}/v1/health").json()
    assert health["status"] == "ok" and health["runtime"] == "torch"
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/health", "/v1/references", "/v1/references/{ref_id}", "/v1/remove"} <= set(schema["paths"])


def test_reference_lifecycle(server, davis):
    painted = np.zeros((140, 140, 3), np.uint8)
    painted[30:110, 30:110] = (200, 120, 40)
    created = httpx.post(f"{server}/v1/references", files={"image": ("p.png", png(painted), "image/png")},
                         data={"label": "box", "background": "black"})
    assert created.status_code == 201
    ref = created.json()
    assert ref["label"] == "box" and ref["object_patches"] > 0 and ref["background_patches"] == 0
    assert ref["id"] in [r["id"] for r in httpx.get(f"{server}/v1/references").json()]
    assert httpx.get(f"{server}/v1/references/{ref['id']}").json()["label"] == "box"
    assert httpx.delete(f"{server}/v1/references/{ref['id']}").status_code == 204
    assert httpx.get(f"{server}/v1/references/{ref['id']}").status_code == 404
    assert httpx.delete(f"{server}/v1/references/{ref['id']}").status_code == 404


@pytest.mark.parametrize("output,mode", [("composite", "RGB"), ("mask", "L"), ("heatmap", "RGB"), ("overlay", "RGB")])
def test_remove_returns_a_png_at_the_input_size(server, dog_ref, davis, output, mode):
    frame = jpeg_of(davis / "JPEGImages/480p/dog/00008.jpg")
    response = httpx.post(f"{server}/v1/remove", params={"reference": dog_ref, "output": output, "threshold": "otsu"},
                          files={"image": ("f.jpg", frame, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    result = Image.open(io.BytesIO(response.content))
    assert result.size == (854, 480) and result.mode == mode


def test_remove_transparent_and_paper_method(server, dog_ref, davis):
    frame = jpeg_of(davis / "JPEGImages/480p/dog/00008.jpg")
    response = httpx.post(f"{server}/v1/remove", params={"reference": dog_ref, "background": "transparent", "method": "paper"},
                          files={"image": ("f.jpg", frame, "image/jpeg")})
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).mode == "RGBA"


def test_errors_a_client_can_act_on(server, dog_ref, davis):
    frame = ("f.jpg", jpeg_of(davis / "JPEGImages/480p/dog/00008.jpg"), "image/jpeg")
    remove = f"{server}/v1/remove"
    # 413: too many bytes, and too many pixels (a small file of a huge flat image)
    big = httpx.post(remove, params={"reference": dog_ref}, files={"image": ("b.bin", b"\x00" * (4 * 1024 * 1024), "image/png")})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    huge = png(np.zeros((2500, 2500, 3), np.uint8))
    assert httpx.post(remove, params={"reference": dog_ref}, files={"image": ("h.png", huge, "image/png")}).status_code == 413
    # 415: not an image
    text = httpx.post(remove, params={"reference": dog_ref}, files={"image": ("t.txt", b"hello", "text/plain")})
    assert text.status_code == 415
    # 404: unknown reference, including anything that looks like a path
    for ref in ("0123456789abcdef", "../../etc/passwd"):
        assert httpx.post(remove, params={"reference": ref}, files={"image": frame}).status_code == 404
    # 422: bad parameters, naming the parameter
    bad = httpx.post(remove, params={"reference": dog_ref, "threshold": "high"}, files={"image": frame})
    assert bad.status_code == 422 and "threshold" in bad.text
    bad = httpx.post(remove, params={"reference": dog_ref, "background": "purple"}, files={"image": frame})
    assert bad.status_code == 422 and "background" in bad.text
    bad = httpx.post(remove, params={"reference": dog_ref, "method": "magic"}, files={"image": frame})
    assert bad.status_code == 422 and "method" in bad.text
    missing = httpx.post(remove, files={"image": frame})
    assert missing.status_code == 422 and "reference" in missing.text
    # a reference with no object left is 422, not 500
    black = httpx.post(f"{server}/v1/references", files={"image": ("k.png", png(np.zeros((64, 64, 3), np.uint8)), "image/png")},
                       data={"background": "black"})
    assert black.status_code == 422 and "no object left" in black.text
    mismatched = httpx.post(f"{server}/v1/references", files={
        "image": frame, "mask": ("m.png", png(np.zeros((10, 10), np.uint8)), "image/png")})
    assert mismatched.status_code == 422 and "mask" in mismatched.text


def test_metrics_count_frames_latency_queue_and_errors(server, dog_ref, davis):
    httpx.post(f"{server}/v1/remove", params={"reference": dog_ref}, files={"image": ("f.jpg", jpeg_of(davis / "JPEGImages/480p/dog/00008.jpg"), "image/jpeg")})
    httpx.post(f"{server}/v1/remove", params={"reference": "nope"}, files={"image": ("f.jpg", b"x", "image/jpeg")})
    text = httpx.get(f"{server}/metrics").text
    assert 'dinomask_frames_total{endpoint="remove"}' in text
    assert "dinomask_latency_seconds_bucket" in text
    assert "dinomask_queue_depth" in text
    assert 'dinomask_errors_total{status="404"}' in text


def test_bearer_token(serve_backbone):
    from dinomask.serve.app import ServeConfig, create_app

    with running(create_app(serve_backbone, ServeConfig(token="s3cret"))) as url:
        assert httpx.get(f"{url}/v1/references").status_code == 401
        assert httpx.get(f"{url}/v1/references", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/v1/references", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for path in ("/v1/health", "/metrics"):  # all of /v1, as the README says, and the metrics
            assert httpx.get(f"{url}{path}").status_code == 401
            assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/").status_code == 200  # the page itself asks for the token

        async def ws(query: str = ""):
            import websockets

            async with websockets.connect(url.replace("http", "ws") + "/v1/stream?reference=x" + query) as sock:
                return await sock.recv()

        from websockets.exceptions import InvalidStatus

        for query in ("", "&token=wrong"):  # the same 401 and body as HTTP (it was 403, the docs said 401)
            with pytest.raises(InvalidStatus) as refused:
                asyncio.run(ws(query))
            assert refused.value.response.status_code == 401
            assert b"missing or wrong bearer token" in refused.value.response.body
        assert "unknown reference" in asyncio.run(ws("&token=s3cret"))


def test_queue_full_is_503_with_retry_after(serve_backbone, davis):
    from dinomask.serve.app import ServeConfig, create_app

    class Slow:
        def __init__(self, inner):
            self.inner, self.spec, self.device, self.dtype = inner, inner.spec, inner.device, inner.dtype

        def __call__(self, pixels):
            time.sleep(0.5)
            return self.inner(pixels)

    with running(create_app(Slow(serve_backbone), ServeConfig(queue_size=1))) as url:
        painted = np.zeros((140, 140, 3), np.uint8)
        painted[30:110, 30:110] = 200
        ref = httpx.post(f"{url}/v1/references", files={"image": ("p.png", png(painted), "image/png")}, timeout=30).json()["id"]
        frame = jpeg_of(davis / "JPEGImages/480p/dog/00008.jpg")
        results = []

        def call():
            results.append(httpx.post(f"{url}/v1/remove", params={"reference": ref},
                                      files={"image": ("f.jpg", frame, "image/jpeg")}, timeout=30))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert 200 in codes and 503 in codes
        busy = next(r for r in results if r.status_code == 503)
        assert busy.headers["Retry-After"] == "1"


def test_websocket_stream(server, dog_ref, davis):
    import websockets

    frame = jpeg_of(davis / "JPEGImages/480p/dog/00000.jpg")

    async def session():
        url = server.replace("http", "ws") + f"/v1/stream?reference={dog_ref}"
        async with websockets.connect(url, max_size=None) as ws:
            got = []
            for _ in range(2):
                await ws.send(frame)
                stats = json.loads(await ws.recv())
                result, heat = await ws.recv(), await ws.recv()
                got.append((stats, result, heat))
            await ws.send(json.dumps({"threshold": "x" * 100_000}))  # 100 kB in: a short error out, not an echo
            long = await ws.recv()
            assert len(long) < 1000 and json.loads(long)["status"] == 422 and "100000 characters" in long
            await ws.send(json.dumps({"threshold": "0.4"}))
            assert json.loads(await ws.recv()) == {"ok": True, "threshold": "0.4"}
            await ws.send(b"not a jpeg")
            error = json.loads(await ws.recv())
            await ws.send(frame)
            after = json.loads(await ws.recv())
            return got, error, after

    got, error, after = asyncio.run(session())
    stats, result, heat = got[-1]
    assert stats["width"] == 854 and stats["height"] == 480 and stats["latency_ms"] > 0
    assert 0.0 < stats["mask_fraction"] < 1.0
    assert Image.open(io.BytesIO(result)).size == (854, 480)
    assert Image.open(io.BytesIO(heat)).size == (854, 480)
    assert error["status"] == 415
    assert after["frame"] == 2 and after["rule"].startswith("0.4")


def test_websocket_unknown_reference_is_refused(server):
    import websockets

    async def session():
        async with websockets.connect(server.replace("http", "ws") + "/v1/stream?reference=missing") as ws:
            return json.loads(await ws.recv())

    message = asyncio.run(session())
    assert message["status"] == 404
