"""A Rerun view of what dinomask does to each frame (optional: ``pip install 'dinomask[robotics]'``).

``--rerun`` on ``live`` and ``remove`` logs, per frame, the frame (``camera``, JPEG-encoded: about
a tenth of the raw image's bytes; raw with ``images="raw"``), its mask as a segmentation image
logged under it (``camera/mask``: 0 background, ``i + 1`` object ``i``, named and coloured by an
annotation context, drawn half-transparent over the frame in the same 2D view, as Rerun's own
examples do), the similarity on the patch grid in the colour map of every other picture
(:data:`~dinomask.composite.SIMILARITY_COLORMAP`, ``similarity``), and the loop's FPS and latency
(``loop/fps``, ``loop/latency_ms``). A blueprint lays them out: the frame with its mask, the
similarity, the loop's curves and the note saying where the masks came from. Time lines:
``frame`` (the frame index) and, for bags and cameras, ``capture_time`` (a bag's header stamp, a
camera's clock).

Targets: ``spawn`` starts a viewer, ``FILE.rrd`` saves a recording, ``HOST:PORT`` connects to a
viewer already running (``rerun`` listens on 9876).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dinomask.composite import similarity_colours
from dinomask.errors import OutputError

#: Colours of the objects in the segmentation image (RGB), then repeated.
OBJECT_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 200, 40), (160, 90, 255), (80, 230, 120))


#: How to get the Rerun SDK and its viewer.
INSTALL_HINT = "pip install 'dinomask[robotics]' (rerun-sdk, which brings the 'rerun' viewer)"


def _rerun():
    try:
        import rerun
    except ImportError:
        raise OutputError(f"--rerun needs the robotics extra: {INSTALL_HINT}") from None
    return rerun


def parse_target(target: str) -> tuple[str, str]:
    """``spawn``, ``FILE.rrd`` or ``HOST:PORT`` -> ``(kind, value)``.

    Raises:
        ValueError: anything else, saying what is expected.
    """
    if target == "spawn":
        return "spawn", ""
    if target.lower().endswith(".rrd"):
        return "save", target
    host, _, port = target.rpartition(":")
    if host and port.isdigit() and 0 < int(port) < 65536:
        return "connect", f"rerun+http://{host}:{int(port)}/proxy"
    raise ValueError(f"expected --rerun alone (spawn a viewer), --rerun FILE.rrd or --rerun HOST:PORT, got {target!r}")


def viewer_path() -> str | None:
    """The Rerun viewer installed beside the SDK (the ``rerun`` script in this Python's own ``bin``,
    found also when ``dinomask`` is run by its path or from pipx, with that folder not on PATH),
    else the one on PATH, else None."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "rerun"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rerun")


def check_target(target: str, connect_timeout_s: float = 2.0) -> tuple[str, str]:
    """``--rerun``'s target checked as far as it can be before any work: the SDK is installed, a
    ``.rrd`` names a file in a writable folder (not a folder), ``HOST:PORT`` answers a TCP connect
    within ``connect_timeout_s``, and ``spawn`` finds a viewer to start.

    Returns:
        ``(kind, value)`` as :func:`parse_target`, ``value`` the viewer's path for ``spawn``.

    Raises:
        OutputError: one line saying what is wrong and what to do.
        ValueError: the target is none of the three forms.
    """
    import importlib.util
    import socket

    kind, value = parse_target(target)
    if importlib.util.find_spec("rerun") is None:
        raise OutputError(f"--rerun needs the robotics extra: {INSTALL_HINT}")
    if kind == "save":
        path = Path(value)
        if path.is_dir():
            raise OutputError(f"--rerun {value}: that is a folder; name a file ending in .rrd inside it")
        from dinomask.files import check_writable

        try:
            check_writable(path.parent if str(path.parent) else Path("."), "the Rerun recording")
        except OSError as exc:
            raise OutputError(f"--rerun {value}: cannot write there: {exc.strerror or exc}") from None
    elif kind == "connect":
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=connect_timeout_s):
                pass
        except OSError as exc:
            raise OutputError(f"--rerun {target}: no Rerun viewer answers there ({exc.strerror or exc}); start one "
                              f"with 'rerun --port {port}' on that machine, or save a recording: --rerun FILE.rrd") from None
    else:
        value = viewer_path() or ""
        if not value:
            raise OutputError("--rerun alone starts a Rerun viewer, and none was found beside this Python or on PATH: "
                              f"{INSTALL_HINT}, or save a recording instead: --rerun FILE.rrd")
    return kind, value


class RerunView:
    """One Rerun recording of a run.

    Args:
        target: see :func:`parse_target`.
        object_names: the objects' names, in label order.
        name: the recording's name (the source).
        random_weights: why the model's weights are random, if they are: said in the recording.
        images: ``jpeg`` (the default: a recording a tenth the size) or ``raw`` (every pixel as
            captured).
    """

    #: JPEG quality of the logged frames.
    JPEG_QUALITY = 90

    def __init__(self, target: str, object_names: tuple[str, ...] = ("object",), name: str = "dinomask",
                 random_weights: str | None = None, images: str = "jpeg"):
        if images not in ("jpeg", "raw"):
            raise ValueError(f"images must be 'jpeg' or 'raw', got {images!r}")
        rr = _rerun()
        kind, value = check_target(target)
        self.rr = rr
        self.images = images
        self.stream = rr.RecordingStream("dinomask")
        if kind == "save":
            path = Path(value)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream.save(str(path))
        elif kind == "connect":
            self.stream.connect_grpc(value)
        else:
            rr.spawn(executable_path=value, recording=self.stream)
        self.stream.send_recording_name(str(name)[:200])
        self.stream.send_blueprint(self._blueprint())
        labels = [rr.AnnotationInfo(id=0, label="background", color=(0, 0, 0))]
        labels += [rr.AnnotationInfo(id=i + 1, label=label, color=OBJECT_COLOURS[i % len(OBJECT_COLOURS)])
                   for i, label in enumerate(object_names)]
        self.stream.log("camera/mask", rr.AnnotationContext(labels), static=True)
        note = (f"**RANDOM WEIGHTS** ({random_weights}): these masks mean nothing." if random_weights
                else "Masks by dinomask.")
        self.stream.log("dinomask", rr.TextDocument(note, media_type=rr.MediaType.MARKDOWN), static=True)
        self.frames = 0

    def _blueprint(self):
        import rerun.blueprint as rrb

        return rrb.Blueprint(rrb.Horizontal(
            rrb.Spatial2DView(origin="camera", name="frame and mask"),
            rrb.Vertical(rrb.Spatial2DView(origin="similarity", name="similarity (cosine, -1 to 1)"),
                         rrb.TimeSeriesView(origin="loop", name="loop"),
                         rrb.TextDocumentView(origin="dinomask", name="about these masks")),
            column_shares=[3, 2]))

    def log(self, index: int, image: np.ndarray, result, capture_time_s: float | None = None,
            fps: float | None = None, latency_ms: float | None = None) -> None:
        """One frame: ``image`` (``H x W x 3`` uint8 RGB) and its :class:`~dinomask.segmenter.SegmentationResult`."""
        rr, stream = self.rr, self.stream
        stream.set_time("frame", sequence=int(index))
        if capture_time_s is not None:
            stream.set_time("capture_time", timestamp=float(capture_time_s))
        frame = rr.Image(np.ascontiguousarray(image[:, :, :3]))
        stream.log("camera", frame.compress(jpeg_quality=self.JPEG_QUALITY) if self.images == "jpeg" else frame)
        stream.log("camera/mask", rr.SegmentationImage(np.ascontiguousarray(result.labels), opacity=0.5))
        stream.log("similarity", rr.Image(similarity_colours(result.similarity)))
        if fps is not None:
            stream.log("loop/fps", rr.Scalars(float(fps)))
        if latency_ms is not None:
            stream.log("loop/latency_ms", rr.Scalars(float(latency_ms)))
        self.frames += 1

    def close(self) -> None:
        """Flush and end the recording (a saved ``.rrd`` is complete after this)."""
        self.stream.flush()
        self.stream.disconnect()
