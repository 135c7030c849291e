"""ROS bags in and out, through ``rosbags`` (pure Python; no ROS install): ROS 2 bag folders (MCAP
or SQLite storage), a single ``.mcap`` file, and ROS 1 ``.bag`` files.

In: :class:`BagReader` yields the frames of one image topic (``sensor_msgs/Image`` in rgb8, bgr8,
rgba8, bgra8 or mono8; ``sensor_msgs/CompressedImage`` in JPEG or PNG) as RGB arrays with the
message's header stamp, frame_id and log time. Every size a message declares is checked against
its data and the pixel budget before an array is made from it.

Out: :class:`BagWriter` writes a ROS 2 bag (MCAP storage) beside the final path and moves it into
place when closed, so a bag is never half-written under its name: ``<topic>/mask``
(``sensor_msgs/Image`` mono8: 255 the object, or with several references a label map, 0 the
background), and on request ``<topic>/removed`` (the composited frame, rgb8) and
``<topic>/similarity`` (32FC1 on the patch grid). Each output message carries its input's header
stamp and frame_id and is logged at its input's log time.

Data flow: ``bag -> BagReader -> BagFrame (RGB, stamp) -> Segmenter -> BagWriter -> bag``.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dinomask.atomic import remove_paths, replace_folder, stale_parts, temporary_folder
from dinomask.errors import OutputError, SourceError

#: Image message types read (ROS 2 and ROS 1 names).
RAW_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/Image")
COMPRESSED_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/CompressedImage")
#: Raw encodings read: channels and their order.
ENCODINGS = {"rgb8": (3, "rgb"), "bgr8": (3, "bgr"), "rgba8": (4, "rgba"), "bgra8": (4, "bgra"), "mono8": (1, "mono")}
#: What may be written beside each mask.
EXTRA_OUTPUTS = ("removed", "similarity")
#: The pixel budget of one bag frame: Pillow's own decompression-bomb limit, as for image files.
MAX_FRAME_PIXELS = 89_478_485


def is_bag(path: str | Path) -> bool:
    """A ROS 2 bag folder (with ``metadata.yaml``), an ``.mcap`` file, or a ROS 1 ``.bag`` file."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix.lower() in (".mcap", ".bag")


def _rosbags():
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise SourceError("ROS bags need the robotics extra: pip install 'dinomask[robotics]' (rosbags)") from None
    return AnyReader, get_typestore(Stores.ROS2_HUMBLE)


@dataclass(frozen=True)
class BagFrame:
    """One image message, decoded.

    Attributes:
        image: ``H x W x 3`` uint8 RGB.
        index: the message's position on its topic (0, 1, ...).
        log_time_ns: when it was logged (the bag's clock), in ns.
        stamp: its header stamp, ``(sec, nanosec)``.
        frame_id: its header frame_id.
    """

    image: np.ndarray
    index: int
    log_time_ns: int
    stamp: tuple[int, int]
    frame_id: str

    @property
    def stamp_s(self) -> float:
        """The header stamp in seconds since the epoch."""
        return self.stamp[0] + self.stamp[1] / 1e9


class BagReader:
    """The frames of one image topic of a bag, in log-time order.

    Args:
        path: a ROS 2 bag folder, an ``.mcap`` file or a ROS 1 ``.bag``.
        topic: the image topic; may be left out when the bag has exactly one.

    Raises:
        SourceError: the bag cannot be opened (missing, truncated, corrupt), has no image topic,
            the topic is not one of its image topics, or ``topic`` is needed; naming the bag and
            listing its image topics.
    """

    def __init__(self, path: str | Path, topic: str | None = None):
        any_reader, self.typestore = _rosbags()
        self.path = Path(path)
        try:
            self._reader = any_reader([self.path], default_typestore=self.typestore)
            self._reader.open()
        except Exception as exc:  # rosbags raises its own and OS errors for damaged bags
            raise SourceError(f"bag {self.path}: cannot be read: {exc.__class__.__name__}: {str(exc)[:300]}") from None
        images = {c.topic: c.msgtype for c in self._reader.connections if c.msgtype in RAW_TYPES + COMPRESSED_TYPES}
        if not images:
            found = ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in self._reader.connections)[:10]) or "none"
            self.close()
            raise SourceError(f"bag {self.path} holds no image topic (sensor_msgs Image or CompressedImage); its topics: {found}")
        if topic is None and len(images) > 1:
            self.close()
            raise SourceError(f"bag {self.path} has {len(images)} image topics; choose one with --topic: "
                              + ", ".join(sorted(images)))
        topic = topic or next(iter(images))
        if topic not in images:
            self.close()
            raise SourceError(f"bag {self.path} has no image topic {topic!r}; its image topics: " + ", ".join(sorted(images)))
        self.topic, self.msgtype = topic, images[topic]
        self.connections = [c for c in self._reader.connections if c.topic == topic]
        self.count = sum(c.msgcount for c in self.connections)

    def close(self) -> None:
        """Close the bag (safe to call twice)."""
        reader = getattr(self, "_reader", None)
        if reader is not None:
            try:
                reader.close()
            except Exception:  # a reader that failed to open has nothing to close
                pass
            self._reader = None

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _where(self, index: int) -> str:
        return f"bag {self.path}, topic {self.topic}, message {index}"

    def fps(self) -> float:
        """The topic's rate from its log times (median gap), or 30 where it cannot be told."""
        duration = (self._reader.end_time - self._reader.start_time) / 1e9 if self._reader else 0.0
        return float(np.clip((self.count - 1) / duration, 0.1, 1000.0)) if self.count > 1 and duration > 0 else 30.0

    def __iter__(self) -> Iterator[BagFrame | SourceError]:
        """Each message as a :class:`BagFrame`, or as a :class:`SourceError` (naming the bag, topic
        and message index) when that message alone cannot be decoded: the caller skips and counts it.

        Raises:
            SourceError: the bag cannot be read on from a message (truncated, corrupt).
        """
        index = -1
        try:
            for connection, log_time, raw in self._reader.messages(connections=self.connections):
                index += 1
                try:
                    message = self._reader.deserialize(raw, connection.msgtype)
                except Exception as exc:  # a message that does not decode as its declared type
                    yield SourceError(f"{self._where(index)}: not a valid {connection.msgtype}: "
                                      f"{exc.__class__.__name__}: {str(exc)[:200]}")
                    continue
                try:
                    image = decode_image(message, connection.msgtype, self._where(index))
                except SourceError as exc:
                    yield exc
                    continue
                header = message.header
                yield BagFrame(image, index, int(log_time), (int(header.stamp.sec), int(header.stamp.nanosec)),
                               str(header.frame_id))
        except Exception as exc:  # a truncated or corrupt bag ends the read here, naming where
            raise SourceError(f"{self._where(index + 1)}: the bag cannot be read from here "
                              f"({exc.__class__.__name__}: {str(exc)[:200]}); it is truncated or corrupt") from None


def decode_image(message, msgtype: str, where: str) -> np.ndarray:
    """A deserialised Image or CompressedImage -> ``H x W x 3`` uint8 RGB, its declared sizes checked
    against its data and :data:`MAX_FRAME_PIXELS` before any array is made from them.

    Raises:
        SourceError: naming ``where`` (bag, topic, message index) and what is wrong.
    """
    if msgtype in COMPRESSED_TYPES:
        return _decode_compressed(message, where)
    encoding = str(message.encoding).lower()
    if encoding not in ENCODINGS:
        raise SourceError(f"{where}: image encoding {message.encoding!r} is not read; expected one of "
                          f"{', '.join(ENCODINGS)}")
    channels, order = ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    data = message.data
    if height < 1 or width < 1 or height * width > MAX_FRAME_PIXELS:
        raise SourceError(f"{where}: declares a {width}x{height} image; expected 1 to {MAX_FRAME_PIXELS:,} pixels")
    if step < width * channels or len(data) != step * height:
        raise SourceError(f"{where}: declares {width}x{height} {encoding} (step {step}) but holds {len(data):,} bytes; "
                          f"expected step >= {width * channels} and step x height = {step * height:,} bytes")
    array = np.frombuffer(memoryview(data), np.uint8).reshape(height, step)[:, : width * channels]
    array = array.reshape(height, width, channels)
    if order == "mono":
        return np.repeat(array, 3, axis=2)
    if order in ("bgr", "bgra"):
        return np.ascontiguousarray(array[:, :, 2::-1])
    return np.ascontiguousarray(array[:, :, :3])


def _decode_compressed(message, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from dinomask.preprocess import pil_to_array

    kind = str(message.format).lower()
    if not any(name in kind for name in ("jpeg", "jpg", "png")):
        raise SourceError(f"{where}: compressed format {message.format!r} is not read; expected jpeg or png")
    try:
        image = Image.open(io.BytesIO(bytes(message.data)), formats=["JPEG", "PNG"])
        if image.width * image.height > MAX_FRAME_PIXELS:
            raise SourceError(f"{where}: declares a {image.width}x{image.height} image; at most "
                              f"{MAX_FRAME_PIXELS:,} pixels are decoded")
        image.load()
    except SourceError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SourceError(f"{where}: its {message.format} data does not decode: {exc.__class__.__name__}: "
                          f"{str(exc)[:200]}") from None
    return pil_to_array(image)


class BagWriter:
    """A ROS 2 bag (MCAP storage) of masks for one input topic, written beside ``path`` and moved
    into place by :meth:`close` (also after Ctrl-C: the frames written are kept, finalised).

    Args:
        path: the output bag folder; must not exist unless ``overwrite``.
        topic: the input topic; outputs are ``{topic}/mask`` and, as asked, ``{topic}/removed``
            and ``{topic}/similarity``.
        extras: any of :data:`EXTRA_OUTPUTS`.
        overwrite: replace an existing bag at ``path``.
    """

    def __init__(self, path: str | Path, topic: str, extras: Sequence[str] = (), *, overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        unknown = sorted(set(extras) - set(EXTRA_OUTPUTS))
        if unknown:
            raise ValueError(f"bag outputs are mask plus any of {', '.join(EXTRA_OUTPUTS)}; got {', '.join(unknown)}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise OutputError(f"{self.path} exists; pass --overwrite to replace it")
        remove_paths(stale_parts(self.path))
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self._parent = temporary_folder(self.path)  # the bag is written as parent/NAME, so its file is NAME.mcap
        self._tmp = self._parent / self.path.name
        self._writer = Writer(self._tmp, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        base = topic.rstrip("/")
        self.topics = {"mask": f"{base}/mask", **{name: f"{base}/{name}" for name in extras}}
        self._connections = {name: self._writer.add_connection(name_topic, "sensor_msgs/msg/Image",
                                                               typestore=self.typestore)
                             for name, name_topic in self.topics.items()}
        self.written = 0
        self._overwrite = overwrite

    def _image(self, frame: BagFrame, pixels: np.ndarray, encoding: str):
        types = self.typestore.types
        header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=frame.stamp[0],
                                                                                         nanosec=frame.stamp[1]),
                                              frame_id=frame.frame_id)
        pixels = np.ascontiguousarray(pixels)
        height, width = pixels.shape[:2]
        step = pixels.nbytes // height
        return types["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding=encoding,
                                              is_bigendian=0, step=step, data=pixels.view(np.uint8).reshape(-1))

    def write(self, frame: BagFrame, labels: np.ndarray, removed: np.ndarray | None = None,
              similarity: np.ndarray | None = None) -> None:
        """One input frame's outputs, at its log time and with its header.

        Args:
            labels: ``H x W`` uint8: 0 background, 1.. the objects (one object: written 0/255).
            removed: ``H x W x 3`` uint8 RGB composite, when asked for.
            similarity: ``h x w`` float on the patch grid, when asked for.
        """
        mask = np.where(labels > 0, 255, 0).astype(np.uint8) if labels.max(initial=0) <= 1 else labels.astype(np.uint8)
        outputs = {"mask": (mask, "mono8")}
        if "removed" in self.topics:
            outputs["removed"] = (removed, "rgb8")
        if "similarity" in self.topics:
            outputs["similarity"] = (np.asarray(similarity, "<f4"), "32FC1")
        for name, (pixels, encoding) in outputs.items():
            message = self._image(frame, pixels, encoding)
            self._writer.write(self._connections[name], frame.log_time_ns,
                               self.typestore.serialize_cdr(message, "sensor_msgs/msg/Image"))
        self.written += 1

    def close(self, keep: bool = True) -> Path | None:
        """Finalise the bag and move it into place (``keep``), or delete it. Returns its path or None."""
        if self._writer is None:
            return self.path if keep else None
        self._writer.close()
        self._writer = None
        try:
            if not keep or not self.written:
                return None
            replace_folder(self._tmp, self.path)
            return self.path
        finally:
            shutil.rmtree(self._parent, ignore_errors=True)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None or issubclass(exc_type, KeyboardInterrupt))


class BagCapture:
    """A bag's image topic read like a ``cv2.VideoCapture`` (BGR frames) for
    :class:`~dinomask.video.FrameSource`: ``live --source BAG [--topic T] [--realtime]`` plays it,
    on its own clock (the messages' log times) with ``--realtime``. A message that cannot be decoded
    is skipped with a warning naming it.

    Attributes:
        position_s: the log time of the last frame read, in seconds from the first message.
        last: the last :class:`BagFrame` read (its header stamp and frame_id).
    """

    def __init__(self, path: str | Path, topic: str | None = None):
        self.reader = BagReader(path, topic)
        self._frames = iter(self.reader)
        self._first: int | None = None
        self.position_s = 0.0
        self.last: BagFrame | None = None
        self.skipped = 0

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.reader._reader is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        import logging

        for item in self._frames:
            if isinstance(item, Exception):
                self.skipped += 1
                logging.getLogger("dinomask").warning("skipped %s", item)
                continue
            if self._first is None:
                self._first = item.log_time_ns
            self.position_s = (item.log_time_ns - self._first) / 1e9
            self.last = item
            return True, np.ascontiguousarray(item.image[:, :, ::-1])
        return False, None

    def get(self, prop: int) -> float:
        import cv2

        if prop == cv2.CAP_PROP_FPS:
            return self.reader.fps()
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(self.reader.count)
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self.position_s * 1000.0
        return 0.0

    def release(self) -> None:
        self.reader.close()
