"""The model behind the server: one inference thread behind a bounded queue, the references it
holds, and the decoding and encoding of uploads (which run on that thread, after admission)."""

from __future__ import annotations

import asyncio
import io
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from dinomask.preprocess import mask_from_image, pil_to_array
from dinomask.reference import Reference
from dinomask.segmenter import Segmenter, SegmenterConfig
from dinomask.serve.config import ServeConfig
from dinomask.teach import Teacher, TeachingRefused

# What /v1 accepts, as the docs say; PIL would also open BMP, TIFF, ICO, PPM, QOI ... .
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP")


class ApiError(Exception):
    """An error with an HTTP status a client can act on. A 422 names the ``parameter`` at fault."""

    def __init__(self, status: int, detail: str, headers: dict | None = None, parameter: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers, self.parameter = status, detail, headers or {}, parameter

    @property
    def message(self) -> str:
        """One line for a WebSocket client: the parameter, then the problem."""
        return f"{self.parameter}: {self.detail}" if self.parameter else self.detail


class QueueFull(ApiError):
    def __init__(self, retry_after: int):
        super().__init__(503, "the inference queue is full; retry shortly", {"Retry-After": str(retry_after)})


class Engine:
    """The shared model, references and the bounded inference queue."""

    def __init__(self, backbone, config: ServeConfig, refiner=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.backbone = backbone
        self.refiner = refiner
        self.config = config
        self.references: OrderedDict[str, Reference] = OrderedDict()
        self._teachers: dict[str, Teacher] = {}
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

    def check_room(self) -> None:
        """409 when ``max_references`` are held. Nothing is ever evicted: an id stays valid until its
        client deletes it."""
        if len(self.references) >= self.config.max_references:
            raise ApiError(409, f"this server holds {len(self.references)} references, its limit; delete one with "
                                "DELETE /v1/references/{id}, or start the server with a larger --max-references")

    def feature_bytes(self, extra: Reference | None = None) -> int:
        """Bytes of every feature array held (references and their teaching history), each array once."""
        arrays = {id(a): a for r in self.references.values() for a in r.feature_arrays}
        arrays |= {id(a): a for teacher in self._teachers.values() for a in teacher.feature_arrays()}
        if extra is not None:
            arrays |= {id(a): a for a in extra.feature_arrays}
        return sum(a.nbytes for a in arrays.values())

    def check_features(self, extra: Reference | None = None) -> None:
        """409 when the features held (with ``extra``) pass ``max_feature_bytes``."""
        held = self.feature_bytes(extra)
        if held > self.config.max_feature_bytes:
            raise ApiError(409, f"reference features would take {held / 2**20:.0f} MiB, over this server's "
                                f"{self.config.max_feature_bytes / 2**20:.0f} MiB; delete references or reset taught ones")

    def add_reference(self, reference: Reference) -> str:
        """Hold ``reference`` under a new id (see :meth:`check_room` and :meth:`check_features`)."""
        self.check_room()
        self.check_features(reference)
        ref_id = secrets.token_hex(8)
        self.references[ref_id] = reference
        return ref_id

    def get_reference(self, ref_id: str) -> Reference:
        if ref_id not in self.references:
            raise ApiError(404, f"unknown reference {ref_id!r}; create one with POST /v1/references")
        return self.references[ref_id]

    def delete_reference(self, ref_id: str) -> None:
        self.get_reference(ref_id)
        del self.references[ref_id]
        self._teachers.pop(ref_id, None)
        self._drop_segmenters(ref_id)

    def teacher(self, ref_id: str) -> Teacher:
        """The teaching history of one reference; each change replaces the served reference, so
        open streams pick it up on their next frame."""
        reference = self.get_reference(ref_id)
        if ref_id not in self._teachers:
            def changed(new: Reference, ref_id=ref_id) -> None:  # runs after the teacher's history holds ``new``
                if ref_id in self.references:
                    self.references[ref_id] = new
                    self._drop_segmenters(ref_id)

            self._teachers[ref_id] = Teacher(self.backbone, reference, on_change=changed)
        return self._teachers[ref_id]

    def teach(self, ref_id: str, change) -> Reference:
        """Run ``change(teacher)`` (a click or a view) within the feature budget: a change that
        passes it is undone and refused with 409; a refusal of the teacher itself is 409 too."""
        teacher = self.teacher(ref_id)
        try:
            reference = change(teacher)
        except TeachingRefused as exc:
            raise ApiError(409, str(exc)) from None
        if self.references.get(ref_id) is not reference:  # deleted while the change was computed
            raise ApiError(404, f"reference {ref_id!r} was deleted while it was being taught; nothing was kept")
        try:
            self.check_features()
        except ApiError:
            teacher.undo()
            raise
        return reference

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
            self._segmenters[key] = Segmenter(self.backbone, reference, config, refiner=self.refiner_for(method))
            while len(self._segmenters) > 32:
                self._segmenters.popitem(last=False)
            return self._segmenters[key]

    def refiner_for(self, method: str):
        """The server's refiner for ``dinomask`` masks; ``paper`` stays the method as written."""
        return self.refiner if method == "dinomask" else None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _open_upload(data: bytes, config: ServeConfig, what: str) -> Image.Image:
    """JPEG, PNG or WebP bytes -> decoded PIL image, enforcing the byte and pixel limits before
    decoding. 413 / 415 on failure."""
    if len(data) > config.max_upload_bytes:
        raise ApiError(413, f"{what} is {len(data)} bytes; the limit is {config.max_upload_bytes}")
    if not data:
        raise ApiError(415, f"{what} is empty; expected a JPEG, PNG or WebP image")
    try:
        image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
        width, height = image.size
        if width * height > config.max_pixels:
            raise ApiError(413, f"{what} has {width}x{height} pixels; the limit is {config.max_pixels} pixels")
        image.load()
    except ApiError:
        raise
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"{what} is too large to decode safely ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ApiError(415, f"{what} is not a JPEG, PNG or WebP image (the formats this API accepts)") from None
    except Exception as exc:  # PIL raises many types for truncated and damaged files
        raise ApiError(415, f"{what} is not a readable image ({exc.__class__.__name__}); expected JPEG, PNG or WebP") from None
    return image


def decode_upload(data: bytes, config: ServeConfig, what: str, keep_alpha: bool = False) -> np.ndarray:
    """JPEG, PNG or WebP bytes -> RGB(A) uint8 array (H, W, 3|4), enforcing the byte and pixel limits
    before decoding. 413 / 415 on failure. Call it on a worker thread, after admission
    (:meth:`Engine.run`): a large image takes a second and 100s of MB to decode."""
    return pil_to_array(_open_upload(data, config, what), keep_alpha)


def decode_mask(data: bytes, config: ServeConfig, what: str = "mask") -> np.ndarray:
    """A mask upload -> ``H x W`` bool by :data:`~dinomask.preprocess.MASK_RULE` (the same rule
    as ``dinomask reference --mask`` and ``eval``), with :func:`decode_upload`'s limits."""
    return mask_from_image(_open_upload(data, config, what), what)


def encode(image: np.ndarray, fmt: str = "PNG", quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()
