"""ROS bags in and out (issue 27): bags written here with rosbags' own writers from the
repository's davis-mini frames, in ROS 2 MCAP and SQLite folders, a bare .mcap and a ROS 1 .bag;
outputs read back with an independent reader (``mcap`` with ``mcap-ros2-support``)."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rosbags")

from dinomask.cli import main  # noqa: E402
from dinomask.preprocess import load_image  # noqa: E402

TOPIC = "/camera/image"
FRAMES = 4
#: Header stamps and log times of the planted messages (ns): stamps differ from log times on purpose.
LOG0, STAMP0 = 1_700_000_000_000_000_000, 1_600_000_000


def _typestore(ros1: bool):
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)


def image_message(store, image: np.ndarray, index: int, encoding: str = "rgb8", ros1: bool = False,
                  height: int | None = None, width: int | None = None, data: np.ndarray | None = None):
    types = store.types
    stamp = types["builtin_interfaces/msg/Time"](sec=STAMP0 + index, nanosec=1000 * index)
    header = (types["std_msgs/msg/Header"](seq=index, stamp=stamp, frame_id="cam_optical")
              if ros1 else types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam_optical"))
    if encoding == "bgr8":
        pixels = image[:, :, ::-1]
    elif encoding == "mono8":
        pixels = image[:, :, :1]
    else:
        pixels = image
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    payload = pixels.reshape(-1) if data is None else data
    return types["sensor_msgs/msg/Image"](header=header, height=height or h, width=width or w, encoding=encoding,
                                          is_bigendian=0, step=(width or w) * pixels.shape[2], data=payload)


def compressed_message(store, image: np.ndarray, index: int, ros1: bool = False, data: bytes | None = None):
    types = store.types
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    stamp = types["builtin_interfaces/msg/Time"](sec=STAMP0 + index, nanosec=1000 * index)
    header = (types["std_msgs/msg/Header"](seq=index, stamp=stamp, frame_id="cam_optical")
              if ros1 else types["std_msgs/msg/Header"](stamp=stamp, frame_id="cam_optical"))
    payload = np.frombuffer(data if data is not None else buffer.getvalue(), np.uint8)
    return types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg", data=payload)


def write_bag(path: Path, messages: dict[str, tuple[str, list]], kind: str = "mcap") -> Path:
    """``{topic: (msgtype, [message, ...])}`` -> a bag of ``kind`` (mcap, sqlite, ros1), messages
    logged 1/24 s apart from :data:`LOG0`."""
    ros1 = kind == "ros1"
    store = _typestore(ros1)
    if ros1:
        from rosbags.rosbag1 import Writer

        writer = Writer(path)
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3)
    with writer:
        for topic, (msgtype, items) in messages.items():
            connection = writer.add_connection(topic, msgtype, typestore=store)
            for index, message in enumerate(items):
                data = store.serialize_ros1(message, msgtype) if ros1 else store.serialize_cdr(message, msgtype)
                writer.write(connection, LOG0 + index * 41_666_667, data)
    return path


@pytest.fixture(scope="module")
def frames(davis) -> list[np.ndarray]:
    return [load_image(p) for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:FRAMES]]


def _bag(folder: Path, frames, kind: str, encoding: str = "rgb8") -> Path:
    ros1 = kind == "ros1"
    store = _typestore(ros1)
    if encoding == "jpeg":
        msgtype = "sensor_msgs/msg/CompressedImage"
        items = [compressed_message(store, f, i, ros1) for i, f in enumerate(frames)]
    else:
        msgtype = "sensor_msgs/msg/Image"
        items = [image_message(store, f, i, encoding, ros1) for i, f in enumerate(frames)]
    name = {"mcap": "bag_mcap", "sqlite": "bag_sqlite", "ros1": "bag.bag"}[kind]
    return write_bag(folder / name, {TOPIC: (msgtype, items)}, kind)


def read_output(path: Path) -> dict[str, list]:
    """Every message of an output bag, by topic, with an independent reader (mcap + mcap_ros2)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    files = sorted(path.glob("*.mcap"))
    assert len(files) == 1, list(path.iterdir())
    out: dict[str, list] = {}
    with files[0].open("rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema.name == "sensor_msgs/msg/Image"
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return out


@pytest.mark.parametrize("kind,encoding", [("mcap", "rgb8"), ("sqlite", "bgr8"), ("ros1", "mono8"), ("mcap", "jpeg"),
                                           ("ros1", "jpeg")])
def test_remove_on_a_bag_writes_a_mask_per_message_with_its_stamp(tmp_path, dog_ref, frames, kind, encoding, capsys):
    bag = _bag(tmp_path, frames, kind, encoding)
    out = tmp_path / "masks"
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(out), "-q",
                 "--bag-outputs", "removed,similarity"]) == 0, capsys.readouterr().err
    topics = read_output(out)
    assert set(topics) == {f"{TOPIC}/mask", f"{TOPIC}/removed", f"{TOPIC}/similarity"}
    for name, messages in topics.items():
        assert len(messages) == FRAMES, name
        for index, (log_time, image) in enumerate(messages):
            assert log_time == LOG0 + index * 41_666_667  # the input's log time
            assert (image.header.stamp.sec, image.header.stamp.nanosec) == (STAMP0 + index, 1000 * index)
            assert image.header.frame_id == "cam_optical"
            if name.endswith("/similarity"):
                assert image.encoding == "32FC1" and image.height * image.width < 2000  # the patch grid
                assert len(image.data) == 4 * image.height * image.width
            else:
                assert (image.height, image.width) == (480, 854)
                assert image.encoding == ("mono8" if name.endswith("/mask") else "rgb8")
    mask = np.frombuffer(bytes(topics[f"{TOPIC}/mask"][0][1].data), np.uint8)
    assert set(np.unique(mask)) <= {0, 255}


def test_a_bare_mcap_file_and_live_on_its_clock(tmp_path, dog_ref, frames, capsys):
    folder = _bag(tmp_path, frames, "mcap")
    single = tmp_path / "camera.mcap"
    shutil.copy(next(folder.glob("*.mcap")), single)
    assert main(["remove", "-r", str(dog_ref), str(single), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert len(read_output(tmp_path / "out")[f"{TOPIC}/mask"]) == FRAMES
    capsys.readouterr()
    started = time.monotonic()
    assert main(["live", "-r", str(dog_ref), "--source", str(single), "--no-window", "--realtime",
                 "--keyframes", "off"]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert time.monotonic() - started >= 3 * 41.6e-3  # played on its log times, not as fast as it goes
    assert "frames processed" in said


def test_several_references_write_a_label_map(tmp_path, dog_ref, tiny_model_dir, davis, frames):
    from tests.test_cli import _two_refs

    refs = _two_refs(tmp_path, dog_ref, tiny_model_dir, davis)
    bag = _bag(tmp_path, frames, "mcap")
    assert main(["remove", *refs, str(bag), "-o", str(tmp_path / "out"), "-q"]) == 0
    values = set()
    for _, image in read_output(tmp_path / "out")[f"{TOPIC}/mask"]:
        assert image.encoding == "mono8"
        values |= set(np.unique(np.frombuffer(bytes(image.data), np.uint8)).tolist())
    assert values <= {0, 1, 2} and len(values) >= 2  # 0 the background, 1 and 2 the objects


def test_several_image_topics_need_a_topic_and_the_error_lists_them(tmp_path, dog_ref, frames, capsys):
    store = _typestore(False)
    items = [image_message(store, f, i) for i, f in enumerate(frames[:2])]
    bag = write_bag(tmp_path / "two", {"/left/image": ("sensor_msgs/msg/Image", items),
                                       "/right/image": ("sensor_msgs/msg/Image", items)})
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(tmp_path / "out"), "-q"]) == 2
    said = capsys.readouterr().err
    assert "choose one with --topic" in said and "/left/image" in said and "/right/image" in said
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(tmp_path / "out"), "-q", "--topic", "/right/image"]) == 0
    assert list(read_output(tmp_path / "out")) == ["/right/image/mask"]


def _mcap_bomb(path: Path) -> Path:
    """An MCAP whose one chunk declares 1 TiB inflated (zstd): refused by its declared size."""
    import struct

    def record(op: int, body: bytes) -> bytes:
        return bytes([op]) + struct.pack("<Q", len(body)) + body

    def text(value: str) -> bytes:
        return struct.pack("<I", len(value)) + value.encode()

    chunk = struct.pack("<QQQI", 0, 0, 2**40, 0) + text("zstd") + struct.pack("<Q", 16) + b"\x28\xb5\x2f\xfd" + b"\0" * 12
    path.write_bytes(b"\x89MCAP0\r\n" + record(0x01, text("ros2") + text("hostile")) + record(0x06, chunk))
    return path


def _hostile(folder: Path, frames) -> dict[str, tuple[Path, str, tuple[int, ...], Path | None]]:
    """Hostile and odd bags: ``{case: (bag, phrase said, exit codes, output or None)}``."""
    store = _typestore(False)
    small = frames[0][:48, :64]
    good = [image_message(store, small, 0)]
    string = store.types["std_msgs/msg/String"]
    truncated = write_bag(folder / "truncated", {TOPIC: ("sensor_msgs/msg/Image", good * 3)})
    data = next(truncated.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])
    garbage = folder / "garbage.mcap"
    garbage.write_bytes(b"\x89MCAP0\r\n" + b"\x07" * 5000)
    from rosbags.rosbag1 import Writer as Ros1Writer

    ros1_store = _typestore(True)
    ros1 = folder / "killed.bag"
    with Ros1Writer(ros1) as writer:
        writer.chunk_threshold = 4000
        connection = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=ros1_store)
        for index in range(4):
            writer.write(connection, LOG0 + index, ros1_store.serialize_ros1(
                image_message(ros1_store, small, index, ros1=True), "sensor_msgs/msg/Image"))
    ros1.write_bytes(ros1.read_bytes()[: int(ros1.stat().st_size * 0.6)])
    mixed = {TOPIC: ("sensor_msgs/msg/Image", good)}
    foreign = folder / "foreign"
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Writer(foreign, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        strings = writer.add_connection(TOPIC, "std_msgs/msg/String", typestore=store)
        writer.write(strings, LOG0, store.serialize_cdr(string(data="not an image"), "std_msgs/msg/String"))
        writer.write(images, LOG0 + 1, store.serialize_cdr(good[0], "sensor_msgs/msg/Image"))
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, format="JPEG")
    unnamed = store.types["sensor_msgs/msg/CompressedImage"](header=good[0].header, format="",
                                                              data=np.frombuffer(buffer.getvalue(), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 3000, np.uint16)).save(buffer, format="PNG")
    depth = store.types["sensor_msgs/msg/CompressedImage"](header=good[0].header, format="16UC1; png",
                                                            data=np.frombuffer(buffer.getvalue(), np.uint8))
    slow = folder / "slow"
    with Writer(slow, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        camera = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        status = writer.add_connection("/status", "std_msgs/msg/String", typestore=store)
        for when in (0, 3600 * 10**9):  # a status topic that spans an hour beside a 2-frame camera
            writer.write(status, LOG0 + when, store.serialize_cdr(string(data="ok"), "std_msgs/msg/String"))
        for index in range(2):
            writer.write(camera, LOG0 + 10**9 + index * 50_000_000, store.serialize_cdr(good[0], "sensor_msgs/msg/Image"))
    holder = folder / "holder"
    holder.mkdir()
    held = write_bag(holder / "held", mixed)
    return {
        "no image topic": (write_bag(folder / "strings", {"/chatter": ("std_msgs/msg/String", [string(data="hi")])}),
                           "holds no image topic", (2,), None),
        "declared size unlike its data": (write_bag(folder / "mismatch", {TOPIC: ("sensor_msgs/msg/Image", good + [
            image_message(store, small, 1, height=480, width=640)])}), "message 1: declares 640x480 rgb8", (1,), None),
        "a huge declared image": (write_bag(folder / "huge", {TOPIC: ("sensor_msgs/msg/Image", [
            image_message(store, small, 0, height=200_000, width=200_000, data=np.zeros(16, np.uint8))])}),
                                  "message 0: declares a 200000x200000 image", (1,), None),
        "an unread encoding": (write_bag(folder / "bayer", {TOPIC: ("sensor_msgs/msg/Image", [
            image_message(store, small, 0, encoding="bayer_rggb8")])}), "'bayer_rggb8' is not read", (1,), None),
        "a JPEG that does not decode": (write_bag(folder / "badjpeg", {TOPIC: ("sensor_msgs/msg/CompressedImage", [
            compressed_message(store, small, 0, data=b"\xff\xd8 not a jpeg")])}), "message 0: its jpeg data does not decode",
                                        (1,), None),
        "a truncated MCAP bag": (truncated, "truncated", (1, 2), None),
        "a truncated ROS 1 bag": (ros1, "truncated or corrupt", (1,), None),
        "garbage named .mcap": (garbage, "garbage.mcap", (2,), None),
        "a chunk that declares 1 TiB": (_mcap_bomb(folder / "bomb.mcap"), "are inflated", (2,), None),
        "a foreign type on the image topic": (foreign, "1 skipped (not an image type: 1 std_msgs/msg/String)", (0,), None),
        "a CompressedImage with an empty format": (write_bag(folder / "unnamed", {TOPIC: (
            "sensor_msgs/msg/CompressedImage", [unnamed])}), "1 of 1 message written", (0,), None),
        "a compressed depth image": (write_bag(folder / "depth", {TOPIC: ("sensor_msgs/msg/CompressedImage", [depth])}),
                                     "is a depth image", (1,), None),
        "a camera beside a long slow topic": (slow, "2 of 2 messages written", (0,), None),
        "an output folder that holds the input": (held, "holds the input bag", (2,), holder),
    }


def test_hostile_bags_give_one_message_naming_bag_topic_and_message(tmp_path, dog_ref, frames, capsys):
    """Each within the budgets of the hostile corpus: 10 s and 300 MiB (a 200000 x 200000 image is
    never allocated: its size is checked against its data first; a 1 TiB chunk is never inflated)."""
    from tests.helpers import peak_rss_growth

    for case, (bag, phrase, codes, output) in _hostile(tmp_path, frames).items():
        code = [None]
        out = output or tmp_path / f"out-{bag.stem}"
        before = sorted(p.name for p in output.iterdir()) if output else None
        started = time.perf_counter()
        growth = peak_rss_growth(lambda: code.__setitem__(0, main(["remove", "-r", str(dog_ref), str(bag), "-o",
                                                                    str(out), "-q", "--overwrite"])))
        said = capsys.readouterr()
        text = said.err + said.out
        assert code[0] in codes, (case, code[0], text[-1500:])
        assert "Traceback" not in text, text[-2000:]
        assert str(bag) in text and phrase in text, (case, phrase, text[-1500:])
        assert growth < 300 and time.perf_counter() - started < 10, (case, growth)
        if output:
            assert sorted(p.name for p in output.iterdir()) == before, case  # nothing of the user's is gone


def test_a_failed_message_is_skipped_counted_and_the_rest_written(tmp_path, dog_ref, frames, capsys):
    store = _typestore(False)
    items = [image_message(store, f, i) for i, f in enumerate(frames)]
    items[1] = image_message(store, frames[1], 1, height=10, width=10)  # declared size unlike its data
    bag = write_bag(tmp_path / "one-bad", {TOPIC: ("sensor_msgs/msg/Image", items)})
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(tmp_path / "out"), "-q"]) == 1
    said = capsys.readouterr().err
    assert "1 failed" in said and f"topic {TOPIC}, message 1" in said
    stamps = [image.header.stamp.sec for _, image in read_output(tmp_path / "out")[f"{TOPIC}/mask"]]
    assert stamps == [STAMP0, STAMP0 + 2, STAMP0 + 3]


def interrupt_on_write(patch, call: int = 3) -> None:
    """Ctrl-C as the bag writer takes its ``call``-th frame (``patch``: a monkeypatch)."""
    import dinomask.bags as bags

    real, calls = bags.BagWriter.write, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    patch.setattr(bags.BagWriter, "write", interrupted)


def test_ctrl_c_finalises_the_bag_written_so_far(tmp_path, dog_ref, frames, capsys, monkeypatch):
    interrupt_on_write(monkeypatch)
    bag = _bag(tmp_path, frames, "mcap")
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(tmp_path / "out"), "-q"]) == 130
    assert len(read_output(tmp_path / "out")[f"{TOPIC}/mask"]) == 2  # a valid bag of the frames written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing half-written beside it
    assert "INTERRUPTED" in capsys.readouterr().err


def test_an_existing_output_bag_is_not_replaced_by_surprise(tmp_path, dog_ref, frames, capsys):
    bag = _bag(tmp_path, frames[:2], "mcap")
    (tmp_path / "out").mkdir()
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(tmp_path / "out"), "-q", "--overwrite"]) == 0
    assert len(read_output(tmp_path / "out")[f"{TOPIC}/mask"]) == 2
