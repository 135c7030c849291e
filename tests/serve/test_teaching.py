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
