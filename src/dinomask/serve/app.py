"""``dinomask serve``: a FastAPI app for background removal over HTTP and WebSocket, plus a web page.

One backbone is loaded once and shared. Inference runs on one worker thread behind a
bounded queue: a request that finds the queue full gets 503 with ``Retry-After``.
References live in memory (bounded in number) under server-made ids; no client-supplied
string is ever used as a file path.

Endpoints (all under ``/v1`` need ``Authorization: Bearer TOKEN`` when a token is set)::

    GET    /v1/health                 liveness, model, runtime
    POST   /v1/references             multipart: image, [mask], [label], [background]  -> 201
    GET    /v1/references             list
    GET    /v1/references/{id}        one
    DELETE /v1/references/{id}        -> 204
    POST   /v1/remove                 multipart: image; query: reference, background, threshold, method, output
    WS     /v1/stream                 binary JPEG frames in; JSON stats + result JPEG + heatmap JPEG out
    GET    /metrics                   Prometheus text format
    GET    /                          the web page
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import Annotated, Optional

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dinomask.composite import Background, composite, heatmap, render
from dinomask.errors import ImageReadError, InvalidReferenceError
from dinomask.postprocess import TemporalSettings, ThresholdRule
from dinomask.preprocess import mask_from_pixels, pil_to_array
from dinomask.reference import Reference, ReferenceSettings
from dinomask.segmenter import Segmenter, SegmenterConfig



@dataclass(frozen=True)
class ServeConfig:
    """Limits and settings of one server.

    Attributes:
        token: bearer token required on ``/v1``; None for none.
        max_upload_bytes: larger uploads get 413.
        max_pixels: images with more pixels get 413 (checked from the header, before decoding).
        queue_size: requests waiting or running at once before 503.
        max_references: references kept in memory; the oldest is dropped past this.
        retry_after_s: the ``Retry-After`` a 503 carries.
        max_streams: WebSocket streams open at once; one more is closed with 1013 (try later).
    """

    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    queue_size: int = 4
    max_references: int = 64
    retry_after_s: int = 1
    max_streams: int = 8

    def __post_init__(self) -> None:
        if self.token is not None and (not self.token or not self.token.isascii() or not self.token.isprintable()
                                       or " " in self.token):
            raise ValueError("the token must be non-empty printable ASCII without spaces (it travels in an HTTP header)")
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {self.max_streams}")

    def token_matches(self, given: str | None) -> bool:
        """Constant-time comparison of the bytes; any text (non-ASCII too) is simply not the token."""
        if self.token is None:
            return True
        if given is None:
            return False
        return secrets.compare_digest(given.encode("utf-8", "replace"), self.token.encode("ascii"))


class Method(str, Enum):
    dinomask = "dinomask"
    paper = "paper"


class Output(str, Enum):
    composite = "composite"
    mask = "mask"
    heatmap = "heatmap"
    overlay = "overlay"


class PaintedBackground(str, Enum):
    auto = "auto"
    black = "black"
    white = "white"
    transparent = "transparent"


class ApiError(Exception):
    """An error with an HTTP status a client can act on."""

    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class QueueFull(ApiError):
    def __init__(self, retry_after: int):
        super().__init__(503, "the inference queue is full; retry shortly", {"Retry-After": str(retry_after)})


class Engine:
    """The shared model, references and the bounded inference queue."""

    def __init__(self, backbone, config: ServeConfig):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.backbone = backbone
        self.config = config
        self.references: OrderedDict[str, Reference] = OrderedDict()
        self._segmenters: OrderedDict[tuple, Segmenter] = OrderedDict()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dinomask-infer")
        self._lock = threading.Lock()
        self._segmenter_lock = threading.Lock()
        self._depth = 0
        self.streams = 0  # open WebSocket streams (changed on the event loop only)
        self.registry = CollectorRegistry()
        self.frames = Counter("dinomask_frames", "Frames segmented", ["endpoint"], registry=self.registry)
        self.errors = Counter("dinomask_errors", "Requests answered with an error", ["status"], registry=self.registry)
        self.latency = Histogram("dinomask_latency_seconds", "Time from accepting a frame to its result",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.queue_depth = Gauge("dinomask_queue_depth", "Requests waiting or running", registry=self.registry)

    async def run(self, fn, *args):
        """Run ``fn(*args)`` on the inference thread, or raise :class:`QueueFull`."""
        with self._lock:
            if self._depth >= self.config.queue_size:
                raise QueueFull(self.config.retry_after_s)
            self._depth += 1
            self.queue_depth.set(self._depth)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            with self._lock:
                self._depth -= 1
                self.queue_depth.set(self._depth)

    def add_reference(self, reference: Reference) -> str:
        ref_id = secrets.token_hex(8)
        self.references[ref_id] = reference
        while len(self.references) > self.config.max_references:
            old, _ = self.references.popitem(last=False)
            self._drop_segmenters(old)
        return ref_id

    def get_reference(self, ref_id: str) -> Reference:
        if ref_id not in self.references:
            raise ApiError(404, f"unknown reference {ref_id!r}; create one with POST /v1/references")
        return self.references[ref_id]

    def delete_reference(self, ref_id: str) -> None:
        self.get_reference(ref_id)
        del self.references[ref_id]
        self._drop_segmenters(ref_id)

    def _drop_segmenters(self, ref_id: str) -> None:
        with self._segmenter_lock:
            for key in [k for k in self._segmenters if k[0] == ref_id]:
                del self._segmenters[key]

    def segmenter(self, ref_id: str, method: str, threshold: str | None) -> Segmenter:
        """A cached segmenter for one-off images (no temporal state)."""
        key = (ref_id, method, threshold)
        with self._segmenter_lock:
            if key in self._segmenters:
                return self._segmenters[key]
        reference = self.get_reference(ref_id)
        with self._segmenter_lock:
            config = SegmenterConfig.preset(method)
            if threshold is not None:
                config = config.replace(threshold=threshold)
            self._segmenters[key] = Segmenter(self.backbone, reference, config)
            while len(self._segmenters) > 32:
                self._segmenters.popitem(last=False)
            return self._segmenters[key]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def server_options(config: ServeConfig) -> dict:
    """uvicorn settings that bound what one WebSocket client can hold in memory: a message
    holds at most one upload, and at most 2 wait per connection (uvicorn's defaults,
    16 MiB x 32 queued, let three clients add 1.7 GB)."""
    return {"ws_max_size": config.max_upload_bytes + 1024, "ws_max_queue": 2}


def decode_upload(data: bytes, config: ServeConfig, what: str, keep_alpha: bool = False) -> np.ndarray:
    """Bytes -> RGB(A) uint8, enforcing the size limits before decoding. 413 / 415 on failure."""
    if len(data) > config.max_upload_bytes:
        raise ApiError(413, f"{what} is {len(data)} bytes; the limit is {config.max_upload_bytes}")
    if not data:
        raise ApiError(415, f"{what} is empty; expected a JPEG, PNG or WebP image")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > config.max_pixels:
            raise ApiError(413, f"{what} has {width}x{height} pixels; the limit is {config.max_pixels} pixels")
        image.load()
    except ApiError:
        raise
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"{what} is too large to decode safely ({exc})") from None
    except Exception as exc:  # PIL raises many types for non-images and truncated files
        raise ApiError(415, f"{what} is not a readable image ({exc.__class__.__name__}); expected JPEG, PNG or WebP") from None
    return pil_to_array(image, keep_alpha)


def encode(image: np.ndarray, fmt: str = "PNG", quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _threshold(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        rule = ThresholdRule.parse(value) if value != "auto" else None
    except ValueError as exc:
        raise ApiError(422, f"threshold: {exc}") from None
    return value if rule is None else str(rule)


def _background(value: str) -> Background:
    try:
        return Background.parse(value)
    except ValueError as exc:
        raise ApiError(422, f"background: {exc}") from None


def create_app(backbone, config: ServeConfig = ServeConfig()):
    """Build the FastAPI app around a loaded backbone."""
    from dinomask import __version__

    engine = Engine(backbone, config)

    @asynccontextmanager
    async def lifespan(app):
        yield
        engine.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="dinomask", version=__version__,
        description="One-shot DINOv2 background removal. Make a reference from one photo, then remove the "
                    "background of images or a live stream of frames.",
    )
    app.state.engine = engine
    app.state.config = config
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if config.token is None:
            return
        if credentials is None or not config.token_matches(credentials.credentials):
            raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        engine.errors.labels(str(exc.status)).inc()
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        engine.errors.labels("422").inc()
        problems = [{"parameter": ".".join(str(p) for p in e.get("loc", [])[1:]) or str(e.get("loc")),
                     "problem": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": problems}, status_code=422)

    static = resources.files("dinomask.serve") / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text())

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/v1/health", tags=["service"])
    def health() -> dict:
        """Liveness and what is loaded."""
        return {"status": "ok", "version": __version__, "model": backbone.spec.name,
                "runtime": getattr(backbone, "runtime", "torch"), "references": len(engine.references),
                "queue_depth": engine._depth, "queue_size": config.queue_size, "auth": config.token is not None}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus metrics: frames, latency, queue depth, errors."""
        return Response(generate_latest(engine.registry), media_type=CONTENT_TYPE_LATEST)

    def describe(ref_id: str, reference: Reference) -> dict:
        return {"id": ref_id, "label": reference.label, "object_patches": len(reference.foreground),
                "background_patches": len(reference.background), "images": len(reference.cls)}

    @app.post("/v1/references", status_code=201, tags=["references"], dependencies=[Depends(authorised)])
    async def create_reference(
        image: Annotated[UploadFile, File(description="Photo of the object: background painted black/white/transparent, or with a mask.")],
        mask: Annotated[Optional[UploadFile], File(description="Optional mask (non-zero = object), same size as the image.")] = None,
        label: Annotated[str, Form(max_length=100)] = "object",
        background: Annotated[PaintedBackground, Form()] = PaintedBackground.auto,
    ) -> dict:
        """Make a reference from one photo (and optionally its mask)."""
        photo = decode_upload(await image.read(config.max_upload_bytes + 1), config, "image", keep_alpha=True)
        mask_array = None
        if mask is not None:
            raw = decode_upload(await mask.read(config.max_upload_bytes + 1), config, "mask", keep_alpha=True)
            if raw.shape[:2] != photo.shape[:2]:
                raise ApiError(422, f"mask: size {raw.shape[1]}x{raw.shape[0]} differs from the image's "
                                    f"{photo.shape[1]}x{photo.shape[0]}")
            mask_array = mask_from_pixels(raw)

        def build() -> Reference:
            settings = ReferenceSettings(background=background.value)
            return Reference.from_images(backbone, [photo], None if mask_array is None else [mask_array],
                                         settings=settings, label=label)

        try:
            reference = await engine.run(build)
        except (InvalidReferenceError, ImageReadError) as exc:
            raise ApiError(422, f"image: {exc}") from None
        return describe(engine.add_reference(reference), reference)

    @app.get("/v1/references", tags=["references"], dependencies=[Depends(authorised)])
    def list_references() -> list[dict]:
        """All references held by this server."""
        return [describe(i, r) for i, r in engine.references.items()]

    @app.get("/v1/references/{ref_id}", tags=["references"], dependencies=[Depends(authorised)])
    def get_reference(ref_id: str) -> dict:
        return describe(ref_id, engine.get_reference(ref_id))

    @app.delete("/v1/references/{ref_id}", status_code=204, response_class=Response, tags=["references"],
                dependencies=[Depends(authorised)])
    def delete_reference(ref_id: str):
        engine.delete_reference(ref_id)
        return Response(status_code=204)

    @app.post("/v1/remove", tags=["segmentation"], dependencies=[Depends(authorised)],
              responses={200: {"content": {"image/png": {}}, "description": "The result as PNG"}})
    async def remove(
        image: Annotated[UploadFile, File(description="The frame (JPEG, PNG, WebP).")],
        reference: Annotated[str, Query(max_length=64, description="Reference id from POST /v1/references.")],
        background: Annotated[str, Query(max_length=32, description="black, white, transparent, blur, #rrggbb or r,g,b")] = "black",
        threshold: Annotated[Optional[str], Query(max_length=32, description="0.5, otsu, relative:F, fg-vs-bg or auto")] = None,
        method: Annotated[Method, Query()] = Method.dinomask,
        output: Annotated[Output, Query()] = Output.composite,
    ) -> Response:
        """Remove the background of one image; returns a PNG."""
        fill = _background(background)
        rule = _threshold(threshold)
        engine.get_reference(reference)
        frame = decode_upload(await image.read(config.max_upload_bytes + 1), config, "image")
        started = time.perf_counter()

        def work() -> bytes:
            result = engine.segmenter(reference, method.value, rule).predict(frame)
            return encode(render(frame, result.mask, result.similarity, result.labels, output.value, fill))

        try:
            png = await engine.run(work)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        engine.frames.labels("remove").inc()
        engine.latency.labels("remove").observe(time.perf_counter() - started)
        return Response(png, media_type="image/png")

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket, reference: str = "", threshold: str = "", method: str = "dinomask",
                     background: str = "black", token: str = "") -> None:
        """Live: send binary JPEG frames; each answer is a JSON text message, then the result
        JPEG and the similarity heatmap JPEG as binary messages. Send ``{"threshold": "0.6"}`` to change it."""
        if config.token is not None:
            header = websocket.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else token
            if not config.token_matches(given):
                await websocket.close(code=1008, reason="missing or wrong bearer token")
                return
        await websocket.accept()
        if engine.streams >= config.max_streams:  # accepted first, so the client reads why
            await websocket.close(code=1013, reason=f"at most {config.max_streams} streams at once; try again later")
            return
        try:
            ref = engine.get_reference(reference)
            rule = _threshold(threshold)
            fill = _background(background)
            if fill.kind == "transparent":
                raise ApiError(422, "background: transparent cannot travel as JPEG; use black, white, blur or a colour")
            if method not in ("dinomask", "paper"):
                raise ApiError(422, f"method must be dinomask or paper, got {method!r}")
        except ApiError as exc:
            await websocket.send_text(json.dumps({"error": exc.detail, "status": exc.status}))
            await websocket.close(code=1008 if exc.status == 404 else 1003, reason=exc.detail[:120])
            return

        def make(rule_text: str | None) -> Segmenter:
            cfg = SegmenterConfig.preset(method)
            cfg = cfg.replace(temporal=TemporalSettings(alpha=0.0 if method == "paper" else 0.5))
            return Segmenter(backbone, ref, cfg.replace(threshold=rule_text) if rule_text else cfg)

        segmenter = make(rule)
        count = 0
        engine.streams += 1
        try:
            while True:
                message = await websocket.receive()
                if message.get("type") == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    try:
                        data = json.loads(message["text"])
                        if not isinstance(data, dict):
                            raise ValueError(f'expected a JSON object such as {{"threshold": "0.6"}}, got {type(data).__name__}')
                        if "threshold" in data:
                            segmenter = make(_threshold(str(data["threshold"])))
                        await websocket.send_text(json.dumps({"ok": True, "threshold": str(data.get("threshold"))}))
                    except (ApiError, ValueError) as exc:
                        await websocket.send_text(json.dumps({"error": str(getattr(exc, "detail", exc)), "status": 422}))
                    continue
                started = time.perf_counter()
                try:
                    frame = decode_upload(message.get("bytes") or b"", config, "frame")
                except ApiError as exc:
                    engine.errors.labels(str(exc.status)).inc()
                    await websocket.send_text(json.dumps({"error": exc.detail, "status": exc.status}))
                    continue

                def work(seg=segmenter, image=frame, index=count):
                    result = seg.predict(image)
                    ys, xs = np.nonzero(result.mask)
                    stats = {"frame": index, "mask_fraction": float(result.mask.mean()), "rule": result.rule,
                             "threshold": result.threshold, "width": image.shape[1], "height": image.shape[0],
                             "centroid": [float(xs.mean() / image.shape[1]), float(ys.mean() / image.shape[0])] if len(xs) else None}
                    return stats, encode(composite(image, result.mask, fill), "JPEG"), encode(heatmap(image, result.similarity), "JPEG")

                try:
                    stats, result_jpeg, heat_jpeg = await engine.run(work)
                except QueueFull as exc:
                    engine.errors.labels("503").inc()
                    await websocket.send_text(json.dumps({"error": exc.detail, "status": 503, "dropped": True}))
                    continue
                latency = time.perf_counter() - started
                engine.frames.labels("stream").inc()
                engine.latency.labels("stream").observe(latency)
                stats["latency_ms"] = latency * 1e3
                count += 1
                await websocket.send_text(json.dumps(stats))
                await websocket.send_bytes(result_jpeg)
                await websocket.send_bytes(heat_jpeg)
        except WebSocketDisconnect:
            pass
        finally:
            engine.streams -= 1

    return app
