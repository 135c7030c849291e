"""Limits that hold whatever a client sends: tokens, WebSocket messages and connections,
control messages and stream options."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.serve.conftest import running


def test_a_token_must_be_plain_ascii():
    from dinomask.serve.app import ServeConfig

    for bad in ("s3crét", "", "two words", "tab\there"):
        with pytest.raises(ValueError, match="printable ASCII"):
            ServeConfig(token=bad)


def test_non_ascii_credentials_are_401_not_500(serve_backbone):
    from dinomask.serve.app import ServeConfig, create_app

    with running(create_app(serve_backbone, ServeConfig(token="s3cret"))) as url:
        for header in ("Bearer s3crét".encode("utf-8"), "Bearer s3crét".encode("latin-1"), b"Bearer \xff\xfe"):
            response = httpx.get(f"{url}/v1/references", headers={"Authorization": header})
            assert response.status_code == 401, header

        async def ws(query: str):
            import websockets

            async with websockets.connect(url.replace("http", "ws") + "/v1/stream?reference=x&" + query) as sock:
                await sock.recv()

        from websockets.exceptions import ConnectionClosed, InvalidStatus

        with pytest.raises((ConnectionClosed, InvalidStatus)):
            asyncio.run(ws("token=s3cr%C3%A9t"))


@pytest.fixture(scope="module")
def dog_id(server, davis) -> str:
    files = {"image": ("dog.jpg", (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
             "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
    response = httpx.post(f"{server}/v1/references", files=files)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _stream(url: str, reference: str, query: str = ""):
    import websockets

    return websockets.connect(url.replace("http", "ws") + f"/v1/stream?reference={reference}{query}", max_size=None)


def test_transparent_background_on_a_stream_is_refused_with_a_close_frame(server, dog_id):
    from websockets.exceptions import ConnectionClosed

    async def session():
        async with _stream(server, dog_id, "&background=transparent") as ws:
            message = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return message, closed.value.rcvd

    message, close = asyncio.run(session())
    assert message["status"] == 422 and "transparent" in message["error"]
    assert close is not None and close.code == 1003  # a close frame, not a dropped connection


@pytest.mark.parametrize("control", ["[1, 2]", "\"0.4\"", "3", "null", "{not json"])
def test_a_control_message_that_is_not_an_object_is_answered_and_the_stream_goes_on(server, dog_id, davis, control):
    frame = (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes()

    async def session():
        async with _stream(server, dog_id) as ws:
            await ws.send(control)
            error = json.loads(await ws.recv())
            await ws.send(frame)
            stats = json.loads(await ws.recv())
            return error, stats

    error, stats = asyncio.run(session())
    assert error["status"] == 422
    assert stats["frame"] == 0


def test_a_websocket_message_over_the_upload_limit_closes_with_1009(serve_backbone):
    from websockets.exceptions import ConnectionClosed

    from dinomask.serve.app import ServeConfig, create_app

    config = ServeConfig(max_upload_bytes=64 * 1024)
    with running(create_app(serve_backbone, config)) as url:
        async def session():
            async with _stream(url, "missing-is-fine") as ws:
                await ws.send(b"\0" * (256 * 1024))
                while True:
                    await ws.recv()

        with pytest.raises(ConnectionClosed) as closed:
            asyncio.run(session())
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1009, 1008)


def test_streams_past_the_cap_are_closed_with_try_again_later(serve_backbone, davis):
    from websockets.exceptions import ConnectionClosed

    from dinomask.serve.app import ServeConfig, create_app

    with running(create_app(serve_backbone, ServeConfig(max_streams=1))) as url:
        files = {"image": ("dog.jpg", (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
                 "mask": ("dog.png", (davis / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}
        ref = httpx.post(f"{url}/v1/references", files=files).json()["id"]

        async def session():
            async with _stream(url, ref) as first:
                await first.send(json.dumps({"threshold": "0.5"}))
                assert json.loads(await first.recv())["ok"]  # the first stream is open and counted
                async with _stream(url, ref) as second:
                    with pytest.raises(ConnectionClosed) as closed:
                        await second.recv()
                    return closed.value.rcvd.code

        assert asyncio.run(session()) == 1013
