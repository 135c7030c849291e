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

import json
import time
from contextlib import asynccontextmanager
from enum import Enum
from importlib import resources
from typing import Annotated, Optional

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from dinomask.composite import Background, composite, heatmap, render
from dinomask.errors import DinomaskError, ImageReadError, InvalidReferenceError
from dinomask.postprocess import TemporalSettings, ThresholdRule
from dinomask.reference import Reference, ReferenceSettings
from dinomask.segmenter import Segmenter, SegmenterConfig
from dinomask.serve.config import ServeConfig, server_options
from dinomask.serve.engine import ApiError, Engine, QueueFull, decode_mask, decode_upload, encode
from dinomask.serve.guard import Guard
from dinomask.teach import TeachingRefused

__all__ = ["ServeConfig", "create_app", "server_options"]


class Problem(BaseModel):
    """The body of every error but 422."""

    detail: str


class ParameterProblem(BaseModel):
    parameter: str
    problem: str


class ValidationProblems(BaseModel):
    """The body of a 422: which parameter, and what is wrong with it."""

    detail: list[ParameterProblem]


_BYTE = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: Exactly what :meth:`Background.parse` accepts on /v1, so the schema tells a client the truth.
BACKGROUND_PATTERN = rf"^(black|white|transparent|blur|#[0-9a-fA-F]{{6}}|{_BYTE},{_BYTE},{_BYTE})$"
#: Exactly what :meth:`ThresholdRule.parse` accepts on /v1: a fixed cosine strictly inside (-1, 1),
#: a relative fraction in (0, 1], a named rule, or auto (the method's own rule).
THRESHOLD_PATTERN = r"^(auto|otsu|fg-vs-bg|relative:(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)|-?(0(\.[0-9]*)?|\.[0-9]+))$"
#: What a parameter must look like, said in words when a value does not match its pattern.
PATTERN_WORDS = {"background": "black, white, transparent, blur, #rrggbb or r,g,b (0-255)",
                 "threshold": "a cosine strictly between -1 and 1, otsu, relative:F with F in (0, 1], fg-vs-bg or auto"}


def _errors(*statuses: int) -> dict:
    """OpenAPI ``responses`` for the given error statuses, with their real bodies."""
    what = {400: "Host not allowed, or a malformed request", 401: "Missing or wrong bearer token",
            403: "Origin not allowed", 404: "Unknown reference", 409: "A reference, feature or teaching limit is reached, or nothing to undo",
            413: "Body, file or image over the limit", 415: "Not a JPEG, PNG or WebP image",
            422: "A parameter is missing or invalid", 503: "Inference queue full; see Retry-After"}
    return {status: {"model": ValidationProblems if status == 422 else Problem, "description": what[status]}
            for status in statuses}


class Method(str, Enum):
    dinomask = "dinomask"
    paper = "paper"


class Output(str, Enum):
    composite = "composite"
    mask = "mask"
    heatmap = "heatmap"
    overlay = "overlay"


class ClickKind(str, Enum):
    object = "object"
    background = "background"


#: How deeply a client's JSON may nest (points need 2, control messages 1).
MAX_JSON_DEPTH = 8


def parse_json(text: str, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` for client text, refusing nesting deeper than ``max_depth`` before parsing
    (``[[[[...]]]]`` would otherwise exhaust the parser's recursion).

    Raises:
        ValueError: not JSON, or nested too deeply.
    """
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1
    return json.loads(text)


def attachment(label: str, suffix: str) -> str:
    """A ``Content-Disposition`` value for any label: an ASCII ``filename`` for old clients and
    the label itself as RFC 5987 ``filename*`` (UTF-8, percent-encoded)."""
    from urllib.parse import quote

    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:100] or "reference"
    plain = "".join(c if c.isascii() else "_" for c in safe)
    return f"attachment; filename=\"{plain}{suffix}\"; filename*=UTF-8''{quote(safe + suffix, safe='')}"


def _points(text: str) -> list[tuple[float, float]]:
    """``[[x, y], ...]`` with fractions in [0, 1] -> list of tuples; 422 naming ``points`` otherwise."""
    try:
        data = parse_json(text)
        points = [(float(x), float(y)) for x, y in data]
    except (ValueError, TypeError):
        raise ApiError(422, f'expected JSON like [[0.5, 0.25]], got {text[:60]!r}', parameter="points") from None
    if not points or len(points) > 64 or not all(0.0 <= v <= 1.0 for p in points for v in p):
        raise ApiError(422, "expected 1 to 64 points, each (x, y) fractions of the frame in [0, 1]", parameter="points")
    return points


class PaintedBackground(str, Enum):
    auto = "auto"
    black = "black"
    white = "white"
    transparent = "transparent"


#: The longest threshold rule taken (``relative:0.85``, ``fg-vs-bg``): a longer one is refused
#: without being echoed back.
MAX_THRESHOLD_CHARS = 32


def _threshold(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_THRESHOLD_CHARS:
        raise ApiError(422, f"a threshold of {len(value)} characters; expected at most {MAX_THRESHOLD_CHARS}: "
                            f"{PATTERN_WORDS['threshold']}", parameter="threshold")
    try:
        rule = ThresholdRule.parse(value) if value != "auto" else None
    except ValueError as exc:
        raise ApiError(422, str(exc), parameter="threshold") from None
    return value if rule is None else str(rule)


def _background(value: str) -> Background:
    try:
        return Background.parse(value)
    except ValueError as exc:
        raise ApiError(422, str(exc), parameter="background") from None



def create_app(backbone, config: ServeConfig = ServeConfig(), refiner=None):
    """Build the FastAPI app around a loaded backbone, behind the :class:`Guard` of ``config``;
    with a :class:`~dinomask.refine.SamRefiner`, ``dinomask`` masks are the refiner's."""
    from dinomask import __version__

    engine = Engine(backbone, config, refiner)

    @asynccontextmanager
    async def lifespan(app):
        yield
        engine.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="dinomask", version=__version__,
        description="One-shot DINOv2 background removal. Make a reference from one photo, then remove the "
                    "background of images or a live stream of frames. Every error body is "
                    '`{"detail": "..."}`, but 422\'s, which names each parameter and its problem.',
    )
    app.state.engine = engine
    app.state.config = config
    app.add_middleware(Guard, config=config, on_refuse=lambda status: engine.errors.labels(str(status)).inc())
    # The guard checks the token before the body is read; this only declares the scheme in the
    # OpenAPI schema, and only when a token is set.
    secured = [Depends(HTTPBearer(auto_error=False))] if config.token is not None else []
    guarded = (400, 403) + ((401,) if config.token is not None else ())

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        engine.errors.labels(str(exc.status)).inc()
        body = ({"detail": [{"parameter": exc.parameter, "problem": exc.detail}]} if exc.status == 422
                else {"detail": exc.detail})
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        engine.errors.labels("422").inc()
        problems = []
        for error in exc.errors():
            parameter = ".".join(str(p) for p in error.get("loc", [])[1:]) or str(error.get("loc"))
            problem = error.get("msg", "")
            if error.get("type") == "string_pattern_mismatch" and parameter in PATTERN_WORDS:
                problem = f"must be {PATTERN_WORDS[parameter]}; got {error.get('input')!r}"
            problems.append({"parameter": parameter, "problem": problem})
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """404 for unknown paths, 405 with ``Allow`` listing every method of the path (starlette's
        lists only the first route that matched the path)."""
        engine.errors.labels(str(exc.status_code)).inc()
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods = {method for route in app.router.routes if isinstance(route, APIRoute)
                       and route.matches(request.scope)[0] != Match.NONE for method in route.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    static = resources.files("dinomask.serve") / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text())

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/v1/health", tags=["service"], dependencies=secured, responses=_errors(*guarded))
    def health() -> dict:
        """Liveness and what is loaded."""
        return {"status": "ok", "version": __version__, "model": backbone.spec.name,
                "runtime": getattr(backbone, "runtime", "torch"), "references": len(engine.references),
                "max_references": config.max_references,
                "queue_depth": engine._depth, "queue_size": config.queue_size, "auth": config.token is not None,
                "random_weights": getattr(backbone, "random_weights", None) or None}

    @app.get("/metrics", tags=["service"], dependencies=secured,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
                        **_errors(*guarded)})
    def metrics() -> Response:
        """Prometheus metrics: frames, latency, queue depth, errors."""
        return Response(generate_latest(engine.registry), media_type=CONTENT_TYPE_LATEST)

    def describe(ref_id: str, reference: Reference) -> dict:
        taught = reference.teaching
        return {"id": ref_id, "label": reference.label, "object_patches": len(reference.foreground),
                "background_patches": len(reference.background), "images": len(reference.cls),
                "views_added": len(taught.views), "object_clicks": taught.positive_clicks,
                "background_clicks": taught.negative_clicks}

    @app.post("/v1/references", status_code=201, tags=["references"], dependencies=secured,
              responses=_errors(*guarded, 409, 413, 415, 422, 503))
    async def create_reference(
        image: Annotated[UploadFile, File(description="Photo of the object (JPEG, PNG, WebP): background painted black/white/transparent, or with a mask.")],
        mask: Annotated[Optional[UploadFile], File(description="Optional mask, same size as the image: a hard mask (0/1, 0/255) is the object where non-zero, a soft one above 127, a palette PNG where its index is not 0.")] = None,
        label: Annotated[str, Form(max_length=100)] = "object",
        background: Annotated[PaintedBackground, Form()] = PaintedBackground.auto,
    ) -> dict:
        """Make a reference from one photo (and optionally its mask)."""
        engine.check_room()  # before any decoding; checked again when the reference is added
        photo_bytes = await image.read(config.max_upload_bytes + 1)
        mask_bytes = None if mask is None else await mask.read(config.max_upload_bytes + 1)

        def build() -> Reference:
            photo = decode_upload(photo_bytes, config, "image", keep_alpha=True)
            mask_array = None
            if mask_bytes is not None:
                mask_array = decode_mask(mask_bytes, config)
                if mask_array.shape != photo.shape[:2]:
                    raise ApiError(422, f"size {mask_array.shape[1]}x{mask_array.shape[0]} differs from the image's "
                                        f"{photo.shape[1]}x{photo.shape[0]}", parameter="mask")
            settings = ReferenceSettings(background=background.value)
            return Reference.from_images(backbone, [photo], None if mask_array is None else [mask_array],
                                         settings=settings, label=label)

        try:
            reference = await engine.run(build)
        except (InvalidReferenceError, ImageReadError) as exc:
            raise ApiError(422, str(exc), parameter="image") from None
        return describe(engine.add_reference(reference), reference)

    @app.get("/v1/references", tags=["references"], dependencies=secured, responses=_errors(*guarded))
    def list_references() -> list[dict]:
        """All references held by this server."""
        return [describe(i, r) for i, r in engine.references.items()]

    @app.get("/v1/references/{ref_id}", tags=["references"], dependencies=secured,
             responses=_errors(*guarded, 404, 422))
    def get_reference(ref_id: str) -> dict:
        return describe(ref_id, engine.get_reference(ref_id))

    @app.delete("/v1/references/{ref_id}", status_code=204, response_class=Response, tags=["references"],
                dependencies=secured, responses=_errors(*guarded, 404, 422))
    def delete_reference(ref_id: str):
        engine.delete_reference(ref_id)
        return Response(status_code=204)

    @app.post("/v1/references/{ref_id}/points", tags=["teaching"], dependencies=secured,
              responses=_errors(*guarded, 404, 409, 413, 415, 422, 503))
    async def add_points(
        ref_id: str,
        image: Annotated[UploadFile, File(description="The frame that was clicked (JPEG, PNG, WebP).")],
        points: Annotated[str, Form(max_length=4000, description='Clicks as JSON [[x, y], ...], fractions of the frame width and height in [0, 1].')],
        kind: Annotated[ClickKind, Form(description="object: this is the object; background: this is not.")] = ClickKind.object,
    ) -> dict:
        """Teach with clicks: each clicked patch (and its alike neighbours) becomes an object or a
        background prototype of this reference. Streams use it from their next frame."""
        engine.teacher(ref_id)  # 404 before the body is read
        clicks = _points(points)
        data = await image.read(config.max_upload_bytes + 1)

        def work() -> Reference:
            frame = decode_upload(data, config, "image")
            return engine.teach(ref_id, lambda teacher: teacher.click(frame, clicks, positive=kind is ClickKind.object))

        return describe(ref_id, await engine.run(work))

    @app.post("/v1/references/{ref_id}/views", tags=["teaching"], dependencies=secured,
              responses=_errors(*guarded, 404, 409, 413, 415, 422, 503))
    async def add_view(
        ref_id: str,
        image: Annotated[UploadFile, File(description="A frame showing the object (JPEG, PNG, WebP).")],
        mask: Annotated[Optional[UploadFile], File(description="Its mask (read as the reference's mask is); without one, the frame's mask under the current reference is used.")] = None,
    ) -> dict:
        """Add another view of the object: a frame and its mask, pooled with the reference's views."""
        engine.teacher(ref_id)  # 404 before the body is read
        frame_bytes = await image.read(config.max_upload_bytes + 1)
        mask_bytes = None if mask is None else await mask.read(config.max_upload_bytes + 1)

        def work() -> Reference:
            frame = decode_upload(frame_bytes, config, "image")
            if mask_bytes is None:  # the mask /v1/remove would give now (the served reference is the current one)
                object_mask = engine.segmenter(ref_id, "dinomask", None).predict(frame).mask
            else:
                object_mask = decode_mask(mask_bytes, config)
                if object_mask.shape != frame.shape[:2]:
                    raise ApiError(422, f"size {object_mask.shape[1]}x{object_mask.shape[0]} differs from the image's "
                                        f"{frame.shape[1]}x{frame.shape[0]}", parameter="mask")
            return engine.teach(ref_id, lambda t: t.add_view(frame, object_mask))

        try:
            return describe(ref_id, await engine.run(work))
        except InvalidReferenceError as exc:
            raise ApiError(422, str(exc), parameter="mask") from None

    @app.post("/v1/references/{ref_id}/undo", tags=["teaching"], dependencies=secured, responses=_errors(*guarded, 404, 409, 422))
    def undo(ref_id: str) -> dict:
        """Take back the last click or view."""
        try:
            return describe(ref_id, engine.teacher(ref_id).undo())
        except TeachingRefused as exc:
            raise ApiError(409, str(exc)) from None

    @app.post("/v1/references/{ref_id}/reset", tags=["teaching"], dependencies=secured, responses=_errors(*guarded, 404, 422))
    def reset(ref_id: str) -> dict:
        """Back to the reference as it was made."""
        return describe(ref_id, engine.teacher(ref_id).reset())

    @app.get("/v1/references/{ref_id}/download", tags=["teaching"], dependencies=secured,
             responses={200: {"content": {"application/octet-stream": {}}, "description": "The reference as .npz"},
                        **_errors(*guarded, 404, 422, 503)})
    async def download(ref_id: str) -> Response:
        """The reference, taught clicks and views included, as the .npz that ``dinomask remove --ref`` reads.
        Written on the inference thread behind the bounded queue (503 when it is full), like every
        request that costs more than a lookup."""
        reference = engine.get_reference(ref_id)
        payload = await engine.run(reference.to_bytes)
        return Response(payload, media_type="application/octet-stream",
                        headers={"Content-Disposition": attachment(reference.label, ".npz")})

    @app.post("/v1/remove", tags=["segmentation"], dependencies=secured,
              responses={200: {"content": {"image/png": {}}, "description": "The result as PNG"},
                         **_errors(*guarded, 404, 413, 415, 422, 503)})
    async def remove(
        image: Annotated[UploadFile, File(description="The frame (JPEG, PNG, WebP).")],
        reference: Annotated[str, Query(max_length=64, description="Reference id from POST /v1/references.")],
        background: Annotated[str, Query(max_length=32, pattern=BACKGROUND_PATTERN, description=PATTERN_WORDS["background"])] = "black",
        threshold: Annotated[Optional[str], Query(max_length=32, pattern=THRESHOLD_PATTERN, description=PATTERN_WORDS["threshold"])] = None,
        method: Annotated[Method, Query()] = Method.dinomask,
        output: Annotated[Output, Query()] = Output.composite,
    ) -> Response:
        """Remove the background of one image; returns a PNG."""
        fill = _background(background)
        rule = _threshold(threshold)
        engine.get_reference(reference)
        data = await image.read(config.max_upload_bytes + 1)
        started = time.perf_counter()

        def work() -> tuple[bytes, str | None]:  # admitted: decoding runs here, on the inference thread, never on the event loop
            frame = decode_upload(data, config, "image")
            result = engine.segmenter(reference, method.value, rule).predict(frame)
            return encode(render(frame, result.mask, result.similarity, result.labels, output.value, fill)), result.refine_skipped

        try:
            png, skipped = await engine.run(work)
        except (ValueError, DinomaskError) as exc:
            raise ApiError(422, str(exc)[:500], parameter="image") from None
        engine.frames.labels("remove").inc()
        engine.latency.labels("remove").observe(time.perf_counter() - started)
        # a frame the refiner cannot take gets the unrefined mask, and the response says why
        return Response(png, media_type="image/png", headers={"X-Dinomask-Refine-Skipped": skipped} if skipped else None)

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket, reference: str = "", threshold: str = "", method: str = "dinomask",
                     background: str = "black") -> None:
        """Live: send binary JPEG frames; each answer is a JSON text message, then the result
        JPEG and the similarity heatmap JPEG as binary messages. Send ``{"threshold": "0.6"}`` to change it.
        The token (when set) comes as a bearer header or ``?token=``; the guard checked it already."""
        await websocket.accept()
        if engine.streams >= config.max_streams:  # accepted first, so the client reads why
            await websocket.close(code=1013, reason=f"at most {config.max_streams} streams at once; try again later")
            return
        try:
            ref = engine.get_reference(reference)
            rule = _threshold(threshold)
            fill = _background(background)
            if fill.kind == "transparent":
                raise ApiError(422, "transparent cannot travel as JPEG; use black, white, blur or a colour", parameter="background")
            if method not in ("dinomask", "paper"):
                raise ApiError(422, f"must be dinomask or paper, got {method!r}", parameter="method")
        except ApiError as exc:
            await websocket.send_text(json.dumps({"error": exc.message, "status": exc.status}))
            await websocket.close(code=1008 if exc.status == 404 else 1003, reason=exc.message[:120])
            return

        def make(rule_text: str | None) -> Segmenter:
            cfg = SegmenterConfig.preset(method)
            cfg = cfg.replace(temporal=TemporalSettings(alpha=0.0 if method == "paper" else 0.5))
            return Segmenter(backbone, ref, cfg.replace(threshold=rule_text) if rule_text else cfg,
                             refiner=engine.refiner_for(method))

        segmenter = make(rule)
        rule_text = rule
        count = 0
        engine.streams += 1
        try:
            while True:
                message = await websocket.receive()
                if message.get("type") == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    try:
                        data = parse_json(message["text"])
                        if not isinstance(data, dict):
                            raise ValueError(f'expected a JSON object such as {{"threshold": "0.6"}}, got {type(data).__name__}')
                        if "threshold" in data:
                            rule_text = _threshold(str(data["threshold"]))
                            segmenter = make(rule_text)
                        await websocket.send_text(json.dumps({"ok": True, "threshold": rule_text}))
                    except (ApiError, ValueError) as exc:
                        await websocket.send_text(json.dumps({"error": getattr(exc, "message", str(exc)), "status": 422}))
                    continue
                started = time.perf_counter()
                payload = message.get("bytes") or b""
                taught = engine.references.get(reference)
                if taught is None:  # deleted while this stream was open: it holds nothing past the budgets
                    detail = f"reference {reference!r} was deleted; open a new stream with another reference"
                    await websocket.send_text(json.dumps({"error": detail, "status": 404}))
                    await websocket.close(code=1008, reason=detail[:120])
                    break
                if taught is not ref:  # clicks or a view changed it: use it from this frame
                    ref = taught
                    segmenter = make(rule_text)

                def work(seg=segmenter, data=payload, index=count):  # admitted first, then decoded off the loop
                    image = decode_upload(data, config, "frame")
                    result = seg.predict(image)
                    ys, xs = np.nonzero(result.mask)
                    stats = {"frame": index, "mask_fraction": float(result.mask.mean()), "rule": result.rule,
                             **({"refine_skipped": result.refine_skipped} if result.refine_skipped else {}),
                             "threshold": result.threshold, "width": image.shape[1], "height": image.shape[0],
                             "centroid": [float(xs.mean() / image.shape[1]), float(ys.mean() / image.shape[0])] if len(xs) else None}
                    return stats, encode(composite(image, result.mask, fill), "JPEG"), encode(heatmap(image, result.similarity), "JPEG")

                try:
                    stats, result_jpeg, heat_jpeg = await engine.run(work)
                except ApiError as exc:  # QueueFull (503, the frame is dropped) or a frame that is no image
                    engine.errors.labels(str(exc.status)).inc()
                    await websocket.send_text(json.dumps({"error": exc.message, "status": exc.status,
                                                          **({"dropped": True} if isinstance(exc, QueueFull) else {})}))
                    continue
                except (ValueError, DinomaskError) as exc:  # a frame the pipeline cannot take: this frame fails, the stream stays
                    engine.errors.labels("422").inc()
                    await websocket.send_text(json.dumps({"error": str(exc)[:500], "status": 422}))
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
