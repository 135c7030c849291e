"""Teaching over /v1: clicks, views, undo, reset and download, with the same limits as the rest."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from dinomask.reference import Reference


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def ref_id(server, davis):
    files = {"image": ("dog.jpg", (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
             "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
    response = httpx.post(f"{server}/v1/references", files=files, data={"label": "dog"})
    assert response.status_code == 201
    yield response.json()["id"]
    httpx.delete(f"{server}/v1/references/{response.json()['id']}")


def test_clicks_views_undo_reset_and_download(server, ref_id, davis, tmp_path):
    frame = ("f.jpg", (davis / "JPEGImages/480p/dog/00008.jpg").read_bytes(), "image/jpeg")
    url = f"{server}/v1/references/{ref_id}"
    negative = httpx.post(f"{url}/points", files={"image": frame}, data={"points": "[[0.05, 0.1]]", "kind": "background"})
    assert negative.status_code == 200, negative.text
    assert negative.json()["background_clicks"] == 1
    positive = httpx.post(f"{url}/points", files={"image": frame}, data={"points": "[[0.5, 0.5], [0.45, 0.55]]"})
    assert positive.json()["object_clicks"] == 2
    view = httpx.post(f"{url}/views", files={"image": frame,
                                               "mask": ("m.png", (davis / "Annotations/480p/dog/00008.png").read_bytes(), "image/png")})
    assert view.status_code == 200 and view.json()["views_added"] == 1 and view.json()["images"] == 2
    downloaded = httpx.get(f"{url}/download")
    assert downloaded.status_code == 200 and 'filename="dog.npz"' in downloaded.headers["content-disposition"]
    (tmp_path / "taught.npz").write_bytes(downloaded.content)
    taught = Reference.load(tmp_path / "taught.npz")
    assert (taught.teaching.positive_clicks, taught.teaching.negative_clicks, taught.teaching.views) == (2, 1, ((480, 854),))
    assert httpx.post(f"{url}/undo").json()["views_added"] == 0
    assert httpx.post(f"{url}/reset").json()["object_clicks"] == 0
    assert httpx.post(f"{url}/undo").status_code == 409  # nothing left to undo


def test_a_view_without_a_mask_uses_the_current_result_and_bad_input_is_named(server, ref_id, davis):
    frame = ("f.jpg", (davis / "JPEGImages/480p/dog/00008.jpg").read_bytes(), "image/jpeg")
    url = f"{server}/v1/references/{ref_id}"
    assert httpx.post(f"{url}/views", files={"image": frame}).status_code in (200, 422)  # 422: the result was empty or full
    empty = httpx.post(f"{url}/views", files={"image": frame, "mask": ("m.png", _png(np.zeros((480, 854), np.uint8)), "image/png")})
    assert empty.status_code == 422 and empty.json()["detail"][0]["parameter"] == "mask"
    for points in ("not json", "[[2, 0.5]]", "[]", json.dumps([[0.5, 0.5]] * 65)):
        bad = httpx.post(f"{url}/points", files={"image": frame}, data={"points": points})
        assert bad.status_code == 422 and bad.json()["detail"][0]["parameter"] == "points", points
    assert httpx.post(f"{server}/v1/references/nope/points", files={"image": frame},
                      data={"points": "[[0.5, 0.5]]"}).status_code == 404
    assert httpx.post(f"{url}/points", files={"image": ("t.txt", b"hello", "text/plain")},
                      data={"points": "[[0.5, 0.5]]"}).status_code == 415


def test_an_open_stream_uses_a_click_from_its_next_frame(server, ref_id, davis):
    import asyncio

    import websockets

    frame = (davis / "JPEGImages/480p/dog/00008.jpg").read_bytes()

    async def session():
        async with websockets.connect(server.replace("http", "ws") + f"/v1/stream?reference={ref_id}&threshold=0.2",
                                      max_size=None) as ws:
            fractions = []
            for step in range(2):
                await ws.send(frame)
                fractions.append(json.loads(await ws.recv())["mask_fraction"])
                await ws.recv(), await ws.recv()
                if step == 0:  # background clicks all over the frame, as a user would on every wrong region
                    points = [[x, y] for x in np.linspace(0.02, 0.98, 8) for y in np.linspace(0.02, 0.98, 8)]
                    response = await asyncio.to_thread(
                        httpx.post, f"{server}/v1/references/{ref_id}/points", files={"image": ("f.jpg", frame, "image/jpeg")},
                        data={"points": json.dumps(points), "kind": "background"})
                    assert response.status_code == 200, response.text
            return fractions

    before, after = asyncio.run(session())
    assert after < before  # the stream's next frame already used the clicks


def test_reference_features_held_by_the_server_have_a_budget(serve_backbone, davis):
    """Views and references pile up features; past max_feature_bytes a change is refused and undone."""
    from dinomask.serve.app import ServeConfig, create_app
    from tests.serve.conftest import running

    files = {"image": ("dog.jpg", (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
             "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
    # the dog reference holds 0.35 MB of 64-dim features; each view pools them again, and the
    # undo history keeps every step: 0.35 + 0.69 + 1.04 MB after two views, 3.5 MB after three
    with running(create_app(serve_backbone, ServeConfig(max_feature_bytes=2_500_000))) as url:
        ref = httpx.post(f"{url}/v1/references", files=files)
        assert ref.status_code == 201, ref.text
        views = [httpx.post(f"{url}/v1/references/{ref.json()['id']}/views", files=files) for _ in range(4)]
        assert [v.status_code for v in views] == [200, 200, 409, 409]
        assert "MiB" in views[2].json()["detail"]
        held = httpx.get(f"{url}/v1/references/{ref.json()['id']}").json()
        assert held["views_added"] == 2  # the refused view was undone
        codes = [httpx.post(f"{url}/v1/references", files=files).status_code for _ in range(3)]
        assert 409 in codes  # new references count against the same budget


# ----------------------------------------------------------------------------- issue 21


def test_deeply_nested_json_is_a_422_and_a_stream_keeps_going(server, ref_id, davis):
    """``[[[[...]]]]`` exhausted the JSON parser's recursion: 500 over HTTP, a dropped WebSocket."""
    import asyncio

    import websockets

    nested = "[" * 2000 + "]" * 2000
    frame = ("f.jpg", (davis / "JPEGImages/480p/dog/00008.jpg").read_bytes(), "image/jpeg")
    response = httpx.post(f"{server}/v1/references/{ref_id}/points", files={"image": frame}, data={"points": nested})
    assert response.status_code == 422 and response.json()["detail"][0]["parameter"] == "points"

    async def session():
        async with websockets.connect(server.replace("http", "ws") + f"/v1/stream?reference={ref_id}", max_size=None) as ws:
            await ws.send("{\"threshold\": " + "[" * 3000 + "]" * 3000 + "}")
            error = json.loads(await ws.recv())
            await ws.send(frame[1])
            return error, json.loads(await ws.recv())

    error, stats = asyncio.run(session())
    assert error["status"] == 422 and "nested deeper" in error["error"]
    assert stats["frame"] == 0  # the same connection serves the next frame


def test_a_label_in_any_script_downloads_with_its_name(server, davis):
    files = {"image": ("dog.jpg", (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
             "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
    made = httpx.post(f"{server}/v1/references", files=files, data={"label": "狗"})
    assert made.status_code == 201
    try:
        downloaded = httpx.get(f"{server}/v1/references/{made.json()['id']}/download")
        assert downloaded.status_code == 200, downloaded.text
        disposition = downloaded.headers["content-disposition"]
        assert 'filename="_.npz"' in disposition and "filename*=UTF-8''%E7%8B%97.npz" in disposition
        assert Reference.load(_saved(downloaded.content)).label == "狗"
    finally:
        httpx.delete(f"{server}/v1/references/{made.json()['id']}")


def _saved(content: bytes):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "r.npz"
    path.write_bytes(content)
    return path


def test_a_stream_on_a_deleted_reference_ends(server, ref_id, davis):
    """An open stream kept serving a deleted reference, outside every budget: it now ends with 404."""
    import asyncio

    import websockets

    frame = (davis / "JPEGImages/480p/dog/00008.jpg").read_bytes()

    async def session():
        async with websockets.connect(server.replace("http", "ws") + f"/v1/stream?reference={ref_id}", max_size=None) as ws:
            await ws.send(frame)
            first = json.loads(await ws.recv())
            await ws.recv(), await ws.recv()
            assert httpx.delete(f"{server}/v1/references/{ref_id}").status_code == 204
            await ws.send(frame)
            ended = json.loads(await ws.recv())
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                return first, ended, closed.rcvd.code
            return first, ended, None

    first, ended, code = asyncio.run(session())
    assert first["frame"] == 0 and ended["status"] == 404 and code == 1008


def test_a_download_waits_in_the_bounded_queue(serve_backbone, davis):
    """Downloads ran beside the queue (300 at once held /v1/health for 9.75 s): now a full queue is 503."""
    from fastapi.testclient import TestClient

    from dinomask.serve.app import ServeConfig, create_app

    app = create_app(serve_backbone, ServeConfig(queue_size=1))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        files = {"image": ("dog.jpg", (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
                 "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
        ref = client.post("/v1/references", files=files).json()["id"]
        assert client.get(f"/v1/references/{ref}/download").status_code == 200
        app.state.engine._depth = 1  # the one place is taken
        busy = client.get(f"/v1/references/{ref}/download")
        app.state.engine._depth = 0
        assert busy.status_code == 503 and "Retry-After" in busy.headers


def test_a_view_taught_while_its_reference_is_deleted_is_a_404(serve_backbone, davis):
    """A view added during a DELETE returned 200 and was lost; now it says so."""
    from dinomask.serve.app import ServeConfig
    from dinomask.serve.engine import ApiError, Engine

    engine = Engine(serve_backbone, ServeConfig())
    reference = Reference.from_images(serve_backbone, [davis / "JPEGImages/480p/dog/00000.jpg"],
                                      [davis / "Annotations/480p/dog/00000.png"])
    ref_id = engine.add_reference(reference)
    frame = np.asarray(Image.open(davis / "JPEGImages/480p/dog/00008.jpg").convert("RGB"))
    mask = np.asarray(Image.open(davis / "Annotations/480p/dog/00008.png")) > 0

    def view_then_delete(teacher):
        engine.delete_reference(ref_id)  # the DELETE lands while the view is computed
        return teacher.add_view(frame, mask)

    with pytest.raises(ApiError) as raised:
        engine.teach(ref_id, view_then_delete)
    assert raised.value.status == 404 and "deleted" in raised.value.detail
