"""Peak memory of a real ``dinomask serve`` process under the probes an attacker would send.

The server runs in its own process so that its peak RSS (``VmHWM``, reset through
``/proc/PID/clear_refs`` before each probe) is measured alone. Each probe would take the
machine down without its budget: a 1x5000 PNG asked for a 185,000x37 grid (21.8 GB before
the kernel killed the server), a 1.5 GB body was spooled in full before the 401, and three
WebSocket clients held 1.7 GB in uvicorn's default queues.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import free_port

#: The most a probe may add to the server's peak RSS over its warmed-up resident size (MiB).
#: Measured on the build machine: thin images +1, 1.5 GB bodies +2, WebSocket flood +69,
#: 8 x 16 MP PNGs +229 (one 48 MB image in flight at a time: decoded, converted, masked, encoded).
BUDGET_MB = 150
LARGE_IMAGE_BUDGET_MB = 350
UPLOAD_MB = 3


def _status(pid: int, field: str) -> float:
    """A ``/proc/PID/status`` field in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory, davis):
    port = free_port()
    command = [sys.executable, "-c", "import sys; from dinomask.cli import main; sys.exit(main(sys.argv[1:]))",
               "serve", "--model", str(tiny_model_dir), "--runtime", "torch", "--device", "cpu", "--port", str(port),
               "--max-upload-mb", str(UPLOAD_MB), "--max-megapixels", "16", "--queue-size", "4"]
    log = tmp_path_factory.mktemp("serve") / "log.txt"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail(f"dinomask serve did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    files = {"image": ("dog.jpg", (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
             "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
    reference = httpx.post(f"{url}/v1/references", files=files, timeout=60).json()["id"]
    frame = (davis / "JPEGImages/480p/dog/00008.jpg").read_bytes()
    for _ in range(3):  # warm up: allocator pools, model caches
        httpx.post(f"{url}/v1/remove", params={"reference": reference}, files={"image": ("f.jpg", frame, "image/jpeg")},
                   timeout=60)
    try:
        yield url, process.pid, reference
    finally:
        process.terminate()
        process.wait(timeout=20)


def _peak_growth(pid: int, probe) -> float:
    """Run ``probe()`` and return how far the server's peak RSS rose above its resident size before it (MiB)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status(pid, "VmRSS")
    probe()
    return _status(pid, "VmHWM") - before


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_thin_images_run_on_a_bounded_grid(served):
    url, pid, reference = served

    def probe():
        for shape in ((1, 5000), (5000, 1), (1, 10), (3, 4000)):
            response = httpx.post(f"{url}/v1/remove", params={"reference": reference, "output": "mask"},
                                  files={"image": ("thin.png", _png(np.full(shape + (3,), 120, np.uint8)), "image/png")},
                                  timeout=60)
            assert response.status_code == 200, response.text
            assert Image.open(io.BytesIO(response.content)).size == shape[::-1]

    growth = _peak_growth(pid, probe)
    print(f"thin images: peak RSS +{growth:.0f} MiB")
    assert growth < BUDGET_MB


def test_big_bodies_are_refused_before_they_are_read(served):
    url, pid, reference = served

    def probe():
        def endless():
            yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="f.png"\r\nContent-Type: image/png\r\n\r\n'
            chunk = b"\0" * (1024 * 1024)
            for _ in range(1500):  # 1.5 GB, if the server kept reading
                yield chunk

        for headers in ({"Content-Length": str(1500 * 1024 * 1024)}, {}):
            try:
                response = httpx.post(f"{url}/v1/remove", params={"reference": reference}, content=endless(),
                                      headers={"Content-Type": "multipart/form-data; boundary=x", **headers}, timeout=60)
                assert response.status_code == 413
            except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
                pass  # answered 413 and closed while the client was still writing

    growth = _peak_growth(pid, probe)
    print(f"1.5 GB bodies: peak RSS +{growth:.0f} MiB")
    assert growth < BUDGET_MB


def test_a_websocket_flood_is_held_to_the_queue_limits(served):
    url, pid, reference = served
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    frame = buffer.getvalue()
    frame += b"\0" * (UPLOAD_MB * 1024 * 1024 - len(frame))  # padded after the JPEG's end: exactly the limit
    closes = []

    async def client(messages: int, message: bytes):
        import websockets
        from websockets.exceptions import ConnectionClosed

        try:
            async with websockets.connect(url.replace("http", "ws") + f"/v1/stream?reference={reference}",
                                          max_size=None, open_timeout=30) as sock:
                for _ in range(messages):  # sent as fast as the server takes them, never reading an answer
                    await sock.send(message)
                if messages == 1:  # the oversized one: wait for the server's close
                    while True:
                        await sock.recv()
        except ConnectionClosed as closed:
            closes.append(closed.rcvd.code if closed.rcvd else None)

    async def flood():
        await asyncio.wait_for(asyncio.gather(*(client(8, frame) for _ in range(3)),
                                              client(1, frame + b"\0" * 4096)), timeout=120)

    growth = _peak_growth(pid, lambda: asyncio.run(flood()))
    print(f"WebSocket flood, 3 clients x 8 x {UPLOAD_MB} MiB + one oversized message: peak RSS +{growth:.0f} MiB")
    assert 1009 in closes  # the message over the limit closed its connection: message too big
    assert growth < BUDGET_MB


def test_many_large_images_at_once_are_admitted_then_decoded_one_at_a_time(served):
    """8 clients each send a 16-megapixel PNG (48 MB decoded): at most 4 are admitted, they are
    decoded on the inference thread one after another, the rest get 503, and /v1/health answers
    while they run."""
    url, pid, reference = served
    big = _png(np.full((4000, 4000, 3), 90, np.uint8))
    codes, health = [], []

    def call():
        response = httpx.post(f"{url}/v1/remove", params={"reference": reference, "output": "mask"},
                              files={"image": ("big.png", big, "image/png")}, timeout=120)
        codes.append(response.status_code)

    def probe():
        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        health.append(httpx.get(f"{url}/v1/health", timeout=30).status_code)
        for thread in threads:
            thread.join()

    growth = _peak_growth(pid, probe)
    print(f"8 x 16 MP PNG at once: peak RSS +{growth:.0f} MiB, statuses {sorted(codes)}")
    assert set(codes) <= {200, 503} and 200 in codes and health == [200]
    assert growth < LARGE_IMAGE_BUDGET_MB
