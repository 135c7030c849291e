"""Bags as a killed recorder leaves them: an MCAP file without its summary (footer, indexes) and a
ROS 1 ``.bag`` without its index, read from the start up to where they break.

``rosbags`` opens a bag through its summary or index, so a truncated bag is refused whole. This
module scans such a bag record by record instead (MCAP with ``mcap``'s own ``StreamReader``; ROS 1
through its record layout: a length-prefixed header of ``name=value`` fields, then a
length-prefixed body), and offers what :class:`~dinomask.bags.BagReader` uses of rosbags'
``AnyReader``: ``connections``, ``messages()``, ``deserialize()``, ``start_time``/``end_time``.

Budgets, set before anything is read: a record may not be longer than the file that holds it, and
a chunk may not inflate to more than :data:`MAX_CHUNK_BYTES` (a compression bomb is refused by its
declared size, before it is decompressed).

Data flow: ``file -> scan (connections, counts, the break) -> messages() -> raw message bytes``.
"""

from __future__ import annotations

import bz2
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

#: The largest chunk inflated: four bytes of the largest frame a bag may hold, plus room for the
#: messages beside it. A chunk that declares more is where the bag breaks.
MAX_CHUNK_BYTES = 4 * 89_478_485 + 64 * 2**20

ROS1_MAGIC = b"#ROSBAG V2.0\n"
MCAP_MAGIC = b"\x89MCAP0\r\n"


class BagBreak(Exception):
    """The bag cannot be read on from ``offset``: why, in words."""

    def __init__(self, offset: int, why: str):
        super().__init__(f"near byte {offset:,}: {why}")
        self.offset, self.why = offset, why


@dataclass(frozen=True)
class Connection:
    """A topic and its type as the scan found them (rosbags' ``Connection`` fields that are used)."""

    id: int
    topic: str
    msgtype: str
    msgcount: int


def ros2_name(msgtype: str) -> str:
    """``sensor_msgs/Image`` (ROS 1) -> ``sensor_msgs/msg/Image``; ROS 2 names are kept."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype


def storage_file(path: Path) -> Path | None:
    """The file a salvage reads: the bag itself, or the one ``.mcap`` of a ROS 2 bag folder."""
    if path.is_file():
        return path
    files = sorted(path.glob("*.mcap")) if path.is_dir() else []
    return files[0] if len(files) == 1 else None


def can_salvage(path: Path) -> bool:
    """A file (or a folder's one ``.mcap``) that starts as an MCAP or a ROS 1 bag does."""
    file = storage_file(path)
    if file is None:
        return False
    with file.open("rb") as handle:
        head = handle.read(len(ROS1_MAGIC))
    return head.startswith(MCAP_MAGIC) or head == ROS1_MAGIC


class SalvageReader:
    """A damaged MCAP or ROS 1 bag, scanned once for its connections and where it breaks.

    Attributes:
        path: the file read.
        ros1: a ROS 1 bag (messages are ROS 1 serialised), else MCAP (CDR).
        broken: the :class:`BagBreak` that ended the scan, or None when it read to the end.
        read_to: the byte offset up to which messages were read whole.
    """

    def __init__(self, path: str | Path):
        self.path = storage_file(Path(path)) or Path(path)
        with self.path.open("rb") as handle:
            self.ros1 = handle.read(len(ROS1_MAGIC)) == ROS1_MAGIC
        self.size = self.path.stat().st_size
        counts: dict[int, int] = {}
        found: dict[int, tuple[str, str]] = {}
        self.start_time, self.end_time, self.broken, self.read_to = 2**63 - 1, 0, None, 0
        try:
            for conn_id, topic, msgtype, log_time, _ in self._records(found):
                counts[conn_id] = counts.get(conn_id, 0) + 1
                self.start_time, self.end_time = min(self.start_time, log_time), max(self.end_time, log_time + 1)
        except BagBreak as exc:
            self.broken = exc
        self.connections = [Connection(i, topic, msgtype, counts.get(i, 0)) for i, (topic, msgtype) in found.items()]
        self._typestore = None

    # ------------------------------------------------------------------ AnyReader's surface

    def messages(self, connections=None) -> Iterator[tuple[Connection, int, bytes]]:
        """``(connection, log_time_ns, raw)`` in file order for ``connections`` (default: all),
        up to the break, where :class:`BagBreak` is raised."""
        wanted = {c.id: c for c in (connections if connections is not None else self.connections)}
        for conn_id, _, _, log_time, data in self._records({}):
            if conn_id in wanted:
                yield wanted[conn_id], log_time, data

    def deserialize(self, raw: bytes, msgtype: str):
        """The message object of ``raw`` (rosbags' typestore for ROS 1 or ROS 2)."""
        if self._typestore is None:
            from rosbags.typesys import Stores, get_typestore

            self._typestore = get_typestore(Stores.ROS1_NOETIC if self.ros1 else Stores.ROS2_HUMBLE)
        if self.ros1:
            return self._typestore.deserialize_ros1(raw, msgtype)
        return self._typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        """Nothing is held open between reads."""

    # ------------------------------------------------------------------ the two layouts

    def _records(self, found: dict) -> Iterator[tuple[int, str, str, int, bytes]]:
        """``(connection id, topic, msgtype, log_time_ns, raw)`` for every message; ``found`` is
        filled with ``{connection id: (topic, msgtype)}`` as connections appear."""
        with self.path.open("rb") as handle:
            reader = self._ros1 if self.ros1 else self._mcap
            yield from reader(handle, found)

    def _mcap(self, handle: BinaryIO, found: dict) -> Iterator[tuple[int, str, str, int, bytes]]:
        from mcap.records import Channel, Chunk, Footer, Message, Schema
        from mcap.stream_reader import StreamReader, breakup_chunk

        schemas: dict[int, str] = {}
        records = StreamReader(handle, emit_chunks=True, record_size_limit=self.size).records
        while True:
            offset = handle.tell()
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as exc:  # mcap raises its own, struct and EOF errors on a cut record
                raise BagBreak(offset, _why(exc)) from None
            inner = [record]
            if isinstance(record, Chunk):
                if record.uncompressed_size > MAX_CHUNK_BYTES:
                    raise BagBreak(offset, f"a chunk declares {record.uncompressed_size:,} bytes; at most "
                                           f"{MAX_CHUNK_BYTES:,} are inflated")
                try:
                    inner = breakup_chunk(record)
                except Exception as exc:
                    raise BagBreak(offset, f"a chunk does not decode ({_why(exc)})") from None
            for item in inner:
                if isinstance(item, Schema):
                    schemas[item.id] = item.name
                elif isinstance(item, Channel):
                    found[item.id] = (item.topic, ros2_name(schemas.get(item.schema_id, "")))
                elif isinstance(item, Message) and item.channel_id in found:
                    topic, msgtype = found[item.channel_id]
                    yield item.channel_id, topic, msgtype, int(item.log_time), item.data
            self.read_to = max(self.read_to, handle.tell())
            if isinstance(record, Footer):
                return

    def _ros1(self, handle: BinaryIO, found: dict) -> Iterator[tuple[int, str, str, int, bytes]]:
        handle.seek(len(ROS1_MAGIC))
        while True:
            offset = handle.tell()
            if not handle.read(1):
                return
            handle.seek(offset)
            header, data = _ros1_record(handle, self.size - offset, offset)
            op = header.get("op", b"\x00")[:1]
            if op == b"\x05":  # a chunk: its records, inflated within the budget
                size = _u32(header.get("size", b""), offset, "chunk size")
                if size > MAX_CHUNK_BYTES:
                    raise BagBreak(offset, f"a chunk declares {size:,} bytes; at most {MAX_CHUNK_BYTES:,} are inflated")
                inner = _ros1_inflate(header.get("compression", b"none").decode("latin-1"), data, size, offset)
                yield from _ros1_chunk(inner, found, offset)
            else:
                yield from _ros1_message(header, data, found, offset)
            self.read_to = handle.tell()


def _why(exc: Exception) -> str:
    text = str(exc)[:200]
    return f"{exc.__class__.__name__}: {text}" if text else f"{exc.__class__.__name__} (the file ends here)"


def _u32(raw: bytes, offset: int, what: str) -> int:
    if len(raw) != 4:
        raise BagBreak(offset, f"the record's {what} is not 4 bytes")
    return struct.unpack("<I", raw)[0]


def _fields(raw: bytes, offset: int) -> dict[str, bytes]:
    """A ROS 1 header: ``u32 length, name=value`` repeated."""
    fields, at = {}, 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise BagBreak(offset, "a header field is cut")
        length = struct.unpack_from("<I", raw, at)[0]
        field = raw[at + 4: at + 4 + length]
        if len(field) != length or b"=" not in field:
            raise BagBreak(offset, "a header field is cut or has no '='")
        name, _, value = field.partition(b"=")
        fields[name.decode("latin-1")] = value
        at += 4 + length
    return fields


def _ros1_record(handle: BinaryIO, left: int, offset: int) -> tuple[dict[str, bytes], bytes]:
    """One record at the handle: its header fields and its body, each no longer than what is left."""
    parts = []
    for what in ("header", "body"):
        raw = handle.read(4)
        if len(raw) < 4:
            raise BagBreak(offset, f"the file ends inside a record's {what} length")
        length = struct.unpack("<I", raw)[0]
        if length > left:
            raise BagBreak(offset, f"a record's {what} declares {length:,} bytes; {left:,} are left in the file")
        payload = handle.read(length)
        if len(payload) < length:
            raise BagBreak(offset, f"the file ends inside a record's {what} ({len(payload):,} of {length:,} bytes)")
        parts.append(payload)
    return _fields(parts[0], offset), parts[1]


def _ros1_inflate(compression: str, data: bytes, size: int, offset: int) -> bytes:
    try:
        if compression == "none":
            inner = data
        elif compression == "bz2":
            inner = bz2.BZ2Decompressor().decompress(data, max_length=size + 1)
        elif compression == "lz4":
            from lz4.frame import LZ4FrameDecompressor

            inner = LZ4FrameDecompressor().decompress(data, max_length=size + 1)
        else:
            raise BagBreak(offset, f"chunk compression {compression!r} is not one of none, bz2, lz4")
    except BagBreak:
        raise
    except Exception as exc:
        raise BagBreak(offset, f"a {compression} chunk does not decompress ({_why(exc)})") from None
    if len(inner) != size:
        raise BagBreak(offset, f"a chunk inflates to {len(inner):,} bytes where it declares {size:,}")
    return inner


def _ros1_chunk(inner: bytes, found: dict, offset: int) -> Iterator[tuple[int, str, str, int, bytes]]:
    import io

    stream = io.BytesIO(inner)
    while stream.tell() < len(inner):
        header, data = _ros1_record(stream, len(inner) - stream.tell(), offset)
        yield from _ros1_message(header, data, found, offset)


def _ros1_message(header: dict, data: bytes, found: dict, offset: int) -> Iterator[tuple[int, str, str, int, bytes]]:
    op = header.get("op", b"\x00")[:1]
    if op == b"\x07":  # a connection: its topic in the header, its type in the body's fields
        conn = _u32(header.get("conn", b""), offset, "connection id")
        body = _fields(data, offset)
        found[conn] = (header.get("topic", b"").decode("utf-8", "replace"),
                       ros2_name(body.get("type", b"").decode("utf-8", "replace")))
    elif op == b"\x02":  # a message
        conn = _u32(header.get("conn", b""), offset, "connection id")
        stamp = header.get("time", b"")
        if len(stamp) != 8:
            raise BagBreak(offset, "a message's time is not 8 bytes")
        if conn in found:
            sec, nsec = struct.unpack("<II", stamp)
            topic, msgtype = found[conn]
            yield conn, topic, msgtype, sec * 1_000_000_000 + nsec, data
