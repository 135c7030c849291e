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
import json
import logging
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
#: Damaged bags already said (path, break), so a bag opened twice by one command is named once.
_SAID: set[tuple[str, str]] = set()
#: The pixel budget of one bag frame: Pillow's own decompression-bomb limit, as for image files.
MAX_FRAME_PIXELS = 89_478_485


def is_bag(path: str | Path) -> bool:
    """A ROS 2 bag folder (with ``metadata.yaml``), an ``.mcap`` file, or a ROS 1 ``.bag`` file (any case)."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix.lower() in (".mcap", ".bag")


def bag_without_metadata(path: str | Path) -> str | None:
    """What to do with a folder that holds a ROS 2 bag's storage but no ``metadata.yaml`` (what a
    recorder that crashed leaves), or None for any other path."""
    path = Path(path)
    if not path.is_dir() or (path / "metadata.yaml").exists():
        return None
    storage = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".mcap", ".db3"))
    if not storage:
        return None
    mcaps = [name for name in storage if name.lower().endswith(".mcap")]
    hint = (f"pass the file inside instead ({path / mcaps[0]}): an MCAP is read without its summary, up to where "
            "it breaks; or " if len(mcaps) == 1 else "")
    return (f"{path} holds a ROS 2 bag's storage ({', '.join(storage[:4])}) but no metadata.yaml, as a recorder "
            f"that stopped mid-write leaves it: {hint}rebuild the metadata with 'ros2 bag reindex {path}'")


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
        self.salvaged: str | None = None  # what a bag without its summary or index said of its break
        self._link_dir = None
        self._reader = self._open(any_reader)
        connections = list(self._reader.connections)
        images = {c.topic: c.msgtype for c in connections if c.msgtype in RAW_TYPES + COMPRESSED_TYPES}
        if not images:
            found = ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in connections)[:10]) or "none"
            broken = f" (read up to where it breaks: {self.salvaged})" if self.salvaged else ""
            self.close()
            raise SourceError(f"bag {self.path} holds no image topic (sensor_msgs Image or CompressedImage){broken}; "
                              f"its topics: {found}")
        if topic is None and len(images) > 1:
            self.close()
            raise SourceError(f"bag {self.path} has {len(images)} image topics; choose one with --topic: "
                              + ", ".join(sorted(images)))
        topic = topic or next(iter(images))
        if topic not in images:
            self.close()
            raise SourceError(f"bag {self.path} has no image topic {topic!r}; its image topics: " + ", ".join(sorted(images)))
        self.topic, self.msgtype = topic, images[topic]
        on_topic = [c for c in connections if c.topic == topic]
        # only the image-typed connections are read; another type on the same topic is counted, not decoded
        self.connections = [c for c in on_topic if c.msgtype in RAW_TYPES + COMPRESSED_TYPES]
        self.foreign = {c.msgtype: c.msgcount for c in on_topic if c not in self.connections}
        self.count = sum(c.msgcount for c in self.connections)
        self._fps: float | None = None

    def _open(self, any_reader):
        """rosbags' reader; for a bag whose summary or index is missing (a recorder killed
        mid-write), a :class:`~dinomask.bag_salvage.SalvageReader` that reads it up to its break."""
        from dinomask.bag_salvage import SalvageReader, can_salvage

        if not self.path.exists():
            raise SourceError(f"bag {self.path}: no such file or folder")
        hint = bag_without_metadata(self.path)
        if hint is not None:
            raise SourceError(hint)
        opened = self.path
        if self.path.is_file() and self.path.suffix.lower() in (".mcap", ".bag") and self.path.suffix not in (".mcap", ".bag"):
            import tempfile  # rosbags tells storage by the suffix in lower case: CAM.MCAP is read through a link

            self._link_dir = tempfile.TemporaryDirectory(prefix="dinomask-bag-")
            opened = Path(self._link_dir.name) / (self.path.stem + self.path.suffix.lower())
            opened.symlink_to(self.path.resolve())
        try:
            reader = any_reader([opened], default_typestore=self.typestore)
            reader.open()
            return reader
        except Exception as exc:  # rosbags raises its own and OS errors for damaged bags
            refused = f"{exc.__class__.__name__}: {str(exc)[:300]}"
        if can_salvage(self.path):
            try:
                reader = SalvageReader(self.path)
            except (OSError, ImportError) as exc:
                raise SourceError(f"bag {self.path}: cannot be read ({refused}; read from the start: "
                                  f"{exc.__class__.__name__}: {str(exc)[:200]})") from None
            broken = reader.broken or "it holds no summary or index"
            self.salvaged = str(broken)
            if (str(self.path), self.salvaged) not in _SAID:  # once, though the command line opens it twice
                _SAID.add((str(self.path), self.salvaged))
                logging.getLogger("dinomask").warning(
                    "bag %s: its summary or index is missing (%s), as a recorder stopped mid-write leaves it; read from "
                    "the start up to where it breaks: %s", self.path, refused, broken)
            return reader
        self._cleanup_link()
        raise SourceError(f"bag {self.path}: cannot be read: {refused}")

    def _cleanup_link(self) -> None:
        if self._link_dir is not None:
            self._link_dir.cleanup()
            self._link_dir = None

    def close(self) -> None:
        """Close the bag (safe to call twice)."""
        reader = getattr(self, "_reader", None)
        if reader is not None:
            try:
                reader.close()
            except Exception:  # a reader that failed to open has nothing to close
                pass
            self._reader = None
        self._cleanup_link()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _where(self, index: int) -> str:
        return f"bag {self.path}, topic {self.topic}, message {index}"

    def fps(self, gaps: int = 48) -> float:
        """The topic's own rate: the median gap between its first ``gaps + 1`` log times (not the
        whole bag's span: a camera beside ``/tf`` or a slow status topic keeps its rate), within
        0.1 to 1000; 30 where it cannot be told (one message, or all at one time)."""
        if self._fps is None:
            times = []
            if self._reader is not None and self.count > 1:
                try:
                    for _, log_time, _ in self._reader.messages(connections=self.connections):
                        times.append(log_time)
                        if len(times) > gaps:
                            break
                except Exception:  # a bag that breaks early: the times read so far
                    pass
            steps = np.diff(np.asarray(times, np.int64))
            steps = steps[steps > 0]
            self._fps = float(np.clip(1e9 / np.median(steps), 0.1, 1000.0)) if steps.size else 30.0
        return self._fps

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
    """A CompressedImage's bytes decoded by what they are (JPEG or PNG, whatever ``format`` says:
    recorders leave it empty or write ``bgr8; jpeg compressed bgr8``); depth images are refused by
    name, as raw ``16UC1`` is."""
    from PIL import Image, UnidentifiedImageError

    from dinomask.preprocess import pil_to_array

    kind = str(message.format).lower()
    if "compresseddepth" in kind or kind.startswith(("16uc1", "32fc1")):
        raise SourceError(f"{where}: compressed format {message.format!r} is a depth image; dinomask reads 8-bit "
                          "colour or mono images (rgb8, bgr8, mono8, JPEG, PNG)")
    try:
        image = Image.open(io.BytesIO(bytes(message.data)), formats=["JPEG", "PNG"])
        if image.width * image.height > MAX_FRAME_PIXELS:
            raise SourceError(f"{where}: declares a {image.width}x{image.height} image; at most "
                              f"{MAX_FRAME_PIXELS:,} pixels are decoded")
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise SourceError(f"{where}: its {message.format or 'PNG'} data is a {image.mode} (16-bit or depth) "
                              "image; dinomask reads 8-bit colour or mono images")
        image.load()
    except SourceError:
        raise
    except UnidentifiedImageError:
        raise SourceError(f"{where}: its {message.format or 'compressed'} data does not decode: it is neither a "
                          f"JPEG nor a PNG (format {message.format!r})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SourceError(f"{where}: its {message.format or 'compressed'} data does not decode: "
                          f"{exc.__class__.__name__}: {str(exc)[:200]}") from None
    return pil_to_array(image)


#: The key of this tool's record in a written bag's ``custom_data`` (metadata.yaml, and the MCAP's
#: ``rosbag2`` metadata record): what wrote it, from which input, and whether it is whole.
MARK_KEY = "dinomask"


def read_mark(path: str | Path) -> dict | None:
    """This tool's record in a bag it wrote (``{"complete": bool, "written": n, "total": m, ...}``),
    or None for anything else: another tool's bag, a file, a folder of the user's."""
    path = Path(path)
    try:
        if path.is_dir():
            import yaml

            info = yaml.safe_load((path / "metadata.yaml").read_text("utf-8"))["rosbag2_bagfile_information"]
        elif path.is_file() and path.suffix.lower() == ".mcap":
            import yaml
            from mcap.reader import make_reader

            with path.open("rb") as handle:
                records = [m for m in make_reader(handle).iter_metadata() if m.name == "rosbag2"]
            info = yaml.safe_load(records[0].metadata["serialized_metadata"])
        else:
            return None
        mark = json.loads((info.get("custom_data") or {})[MARK_KEY])
        return mark if isinstance(mark, dict) and isinstance(mark.get("complete"), bool) else None
    except Exception:  # not a bag, not ours, unreadable: in every case not a bag this tool wrote
        return None


def check_output(source: str | Path | None, output: str | Path, overwrite: bool) -> str | None:
    """The rules for a bag output, checked before any work: nothing the user owns is replaced.

    * the output is never the input, inside it, or a folder that holds it (``-o .``);
    * ``.bag`` is refused: the output is a ROS 2 bag folder, or a bare MCAP file for ``*.mcap``;
    * an existing output is replaced only when it is a bag this tool wrote (its record in the
      bag's metadata): a partial one (an interrupted run) without ``--overwrite``, a whole one
      with it; an empty folder with ``--overwrite``; anything else never.

    Returns:
        A note to print when a partial bag is replaced, else None.

    Raises:
        OutputError: saying which rule and what to do.
    """
    output = Path(output)
    inside, outside = (None if source is None else Path(source).resolve()), output.resolve()
    if inside is not None and (outside == inside or inside in outside.parents or outside in inside.parents):
        relation = "is" if outside == inside else "is inside" if inside in outside.parents else "holds"
        raise OutputError(f"the output {output} {relation} the input bag {source}: choose an output outside it "
                          "(the input is never replaced, --overwrite or not)")
    if output.suffix.lower() == ".bag":
        raise OutputError(f"{output}: outputs are ROS 2 bags (MCAP): name a folder, or a file ending in .mcap")
    if not (output.exists() or output.is_symlink()):
        return None
    mark = read_mark(output)
    if mark is None:
        if output.is_dir() and not output.is_symlink() and not any(output.iterdir()):
            if overwrite:
                return None
            raise OutputError(f"{output} exists; pass --overwrite to replace it")
        raise OutputError(f"{output} exists and is not a bag dinomask wrote; --overwrite replaces only this tool's "
                          "bags, so choose another --output (or move it away yourself)")
    if not mark["complete"]:
        return (f"replacing the partial bag {output} ({mark.get('written', '?')} of {mark.get('total', '?')} "
                "messages) that an interrupted run left")
    if not overwrite:
        raise OutputError(f"{output} exists (a whole bag dinomask wrote); pass --overwrite to replace it")
    return None


class BagWriter:
    """A ROS 2 bag (MCAP storage) of masks for one input topic, written beside ``path`` and moved
    into place by :meth:`close` (also after Ctrl-C: the frames written are kept, finalised and
    marked partial, so a rerun knows it).

    Args:
        path: the output: a bag folder, or a bare MCAP file when it ends in ``.mcap``. See
            :func:`check_output` for what may already be there.
        topic: the input topic; outputs are ``{topic}/mask`` and, as asked, ``{topic}/removed``
            and ``{topic}/similarity``.
        extras: any of :data:`EXTRA_OUTPUTS`.
        overwrite: replace a whole bag this tool wrote at ``path``.
        source: the input bag (named in the bag's record; checked against ``path``).
        objects: how many objects are segmented: one writes the mask 0/255, several a label map
            (0 background, 1.. the objects in ``--ref`` order) in every frame.
        provenance: what made the masks (model, and RANDOM WEIGHTS where they are), kept in the
            bag's record.
    """

    def __init__(self, path: str | Path, topic: str, extras: Sequence[str] = (), *, overwrite: bool = False,
                 source: str | Path | None = None, objects: int = 1, provenance: str = ""):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        unknown = sorted(set(extras) - set(EXTRA_OUTPUTS))
        if unknown:
            raise ValueError(f"bag outputs are mask plus any of {', '.join(EXTRA_OUTPUTS)}; got {', '.join(unknown)}")
        self.path = Path(path)
        self.note = check_output(source, self.path, overwrite)
        self.bare = self.path.suffix.lower() == ".mcap"
        self.source, self.objects, self.provenance = str(source or ""), int(objects), provenance
        remove_paths(stale_parts(self.path))
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self._parent = temporary_folder(self.path)  # the bag is written as parent/NAME, so its file is NAME.mcap
        self._tmp = self._parent / (self.path.stem if self.bare else self.path.name)
        self._writer = Writer(self._tmp, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        base = topic.rstrip("/")
        self.topic = topic
        self.topics = {"mask": f"{base}/mask", **{name: f"{base}/{name}" for name in extras}}
        self._connections = {name: self._writer.add_connection(name_topic, "sensor_msgs/msg/Image",
                                                               typestore=self.typestore)
                             for name, name_topic in self.topics.items()}
        self.written = 0

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
            removed: ``H x W x 3`` uint8 RGB composite, or ``H x W x 4`` RGBA (a transparent
                background: written ``rgba8``, the alpha kept), when asked for.
            similarity: ``h x w`` float on the patch grid, when asked for.
        """
        from dinomask.composite import mask_values

        outputs = {"mask": (mask_values(labels, self.objects), "mono8")}
        if "removed" in self.topics:
            outputs["removed"] = (removed, "rgba8" if removed.shape[-1] == 4 else "rgb8")
        if "similarity" in self.topics:
            outputs["similarity"] = (np.asarray(similarity, "<f4"), "32FC1")
        for name, (pixels, encoding) in outputs.items():
            message = self._image(frame, pixels, encoding)
            self._writer.write(self._connections[name], frame.log_time_ns,
                               self.typestore.serialize_cdr(message, "sensor_msgs/msg/Image"))
        self.written += 1

    def close(self, keep: bool = True, complete: bool = True, total: int | None = None) -> Path | None:
        """Finalise the bag and move it into place (``keep``), or delete it. Returns its path or None.

        Args:
            complete: False marks the bag partial (an interrupted run): a rerun replaces it without
                ``--overwrite``.
            total: the input messages there were, for the record (``written of total``).
        """
        if self._writer is None:
            return self.path if keep else None
        from dinomask._version import __version__

        self._writer.set_custom_data(MARK_KEY, json.dumps({
            "complete": bool(complete), "written": self.written, "total": total if total is not None else self.written,
            "source": self.source, "topic": self.topic, "version": __version__, "made_by": self.provenance}))
        self._writer.close()
        self._writer = None
        try:
            if not keep or not self.written:
                return None
            replace_folder(self._tmp / f"{self._tmp.name}.mcap" if self.bare else self._tmp, self.path)
            return self.path
        finally:
            shutil.rmtree(self._parent, ignore_errors=True)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.close(keep=exc_type is None or interrupted, complete=not interrupted)


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
