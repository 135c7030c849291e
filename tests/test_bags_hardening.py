"""Bags as robots record them, and outputs that never cost the user a file (issue 31): the output
is never the input, inside it, or a folder that holds it; --overwrite replaces only this tool's
bags; an interrupted run leaves a bag marked partial that a rerun replaces; truncated bags are read
up to their break; the topic's own rate; foreign types on the image topic; CompressedImage by its
bytes; label maps decided by the number of references."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rosbags")

from dinomask.cli import main  # noqa: E402
from tests.test_bags import (  # noqa: E402
    LOG0,
    frames,
    TOPIC,
    _bag,
    _typestore,
    image_message,
    interrupt_on_write,
    read_output,
    write_bag,
)


@pytest.fixture(scope="module")
def small(davis) -> list[np.ndarray]:
    from dinomask.preprocess import load_image

    return [load_image(p)[100:196, 300:428] for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:6]]


def _remove(ref, bag, out, *extra) -> int:
    return main(["remove", "-r", str(ref), str(bag), "-o", str(out), "-q", *extra])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- 1. nothing the user owns is deleted

def test_an_output_that_holds_the_input_is_refused_even_with_overwrite(tmp_path, dog_ref, small, capsys, monkeypatch):
    bag = _bag(tmp_path, small[:2], "mcap")
    (tmp_path / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    for output in (tmp_path, bag, bag / "inside", Path(".")):
        if output == Path("."):
            monkeypatch.chdir(tmp_path)
        assert _remove(dog_ref, bag, output, "--overwrite") == 2, output
        said = capsys.readouterr().err
        assert "the input bag" in said and "never replaced" in said, said
    assert _tree(tmp_path) == before  # the bag and the user's file are untouched


def test_overwrite_replaces_only_a_bag_this_tool_wrote(tmp_path, dog_ref, small, capsys):
    bag = _bag(tmp_path, small[:2], "mcap")
    results = tmp_path / "results"
    results.mkdir()
    (results / "earlier.csv").write_text("a,b\n")
    assert _remove(dog_ref, bag, results, "--overwrite") == 2
    assert "not a bag dinomask wrote" in capsys.readouterr().err
    assert (results / "earlier.csv").read_text() == "a,b\n"
    other = write_bag(tmp_path / "other", {TOPIC: ("sensor_msgs/msg/Image",
                                                   [image_message(_typestore(False), small[0], 0)])})
    assert _remove(dog_ref, bag, other, "--overwrite") == 2  # someone else's bag is not ours to replace
    assert (other / "metadata.yaml").is_file()
    out = tmp_path / "masks"
    assert _remove(dog_ref, bag, out) == 0
    assert _remove(dog_ref, bag, out) == 2 and "--overwrite" in capsys.readouterr().err
    assert _remove(dog_ref, bag, out, "--overwrite") == 0
    assert len(read_output(out)[f"{TOPIC}/mask"]) == 2


def test_a_name_ending_in_mcap_is_a_bare_mcap_file_replaced_without_strays(tmp_path, dog_ref, small, capsys):
    from dinomask.bags import read_mark

    bag = _bag(tmp_path, small[:2], "mcap")
    out = tmp_path / "masks.mcap"
    assert _remove(dog_ref, bag, out) == 0
    assert out.is_file() and read_mark(out)["complete"] is True
    from mcap.reader import make_reader

    with out.open("rb") as handle:
        topics = [channel.topic for _, channel, _ in make_reader(handle).iter_messages()]
    assert topics.count(f"{TOPIC}/mask") == 2
    assert _remove(dog_ref, bag, out, "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag_mcap", "dog.npz", "masks.mcap"]  # no stray .part
    foreign = tmp_path / "video.mcap"
    foreign.write_bytes(b"not ours")
    assert _remove(dog_ref, bag, foreign, "--overwrite") == 2 and foreign.read_bytes() == b"not ours"
    assert _remove(dog_ref, bag, tmp_path / "masks.bag") == 2
    assert "name a folder, or a file ending in .mcap" in capsys.readouterr().err


def test_an_interrupted_run_is_marked_partial_and_the_same_command_redoes_it(tmp_path, dog_ref, small, capsys,
                                                                             monkeypatch):
    from dinomask.bags import read_mark

    bag = _bag(tmp_path, small[:4], "mcap")
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        interrupt_on_write(patch)
        assert _remove(dog_ref, bag, out) == 130
    said = capsys.readouterr().err
    assert "INTERRUPTED after 2 of 4 messages" in said and "marked partial" in said, said
    assert read_mark(out) == {**read_mark(out), "complete": False, "written": 2, "total": 4}
    assert _remove(dog_ref, bag, out) == 0, capsys.readouterr().err  # no --overwrite needed for a partial bag
    assert "replacing the partial bag" in capsys.readouterr().err
    assert read_mark(out)["complete"] is True and len(read_output(out)[f"{TOPIC}/mask"]) == 4


def test_replace_folder_leaves_no_stray_when_the_old_output_is_a_file(tmp_path):
    from dinomask.atomic import replace_folder

    final = tmp_path / "out"
    final.write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "a").write_text("new")
    replace_folder(new, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (final / "a").read_text() == "new"


# ----------------------------------------------------------------------------- 3. bags read as robots record them

def test_the_rate_comes_from_the_image_topics_own_log_times(tmp_path, small):
    """A 20 FPS camera beside a status topic that spans a minute: 20 FPS, not 0.1."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from dinomask.bags import BagReader

    store = _typestore(False)
    path = tmp_path / "camera_and_status"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        camera = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        status = writer.add_connection("/status", "std_msgs/msg/String", typestore=store)
        writer.write(status, LOG0, store.serialize_cdr(store.types["std_msgs/msg/String"](data="up"), "std_msgs/msg/String"))
        for index in range(5):
            writer.write(camera, LOG0 + 10**9 + index * 50_000_000,
                         store.serialize_cdr(image_message(store, small[0], index), "sensor_msgs/msg/Image"))
        writer.write(status, LOG0 + 60 * 10**9,
                     store.serialize_cdr(store.types["std_msgs/msg/String"](data="up"), "std_msgs/msg/String"))
    with BagReader(path) as reader:
        assert reader.fps() == pytest.approx(20.0, rel=1e-3)


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("kind", ["mcap", "ros1"])
def test_a_truncated_bag_is_read_up_to_its_break_and_the_frames_before_it_written(tmp_path, dog_ref, small, kind,
                                                                                  capsys, frames, caplog):
    """A recorder killed mid-write leaves no summary (MCAP) or index (ROS 1): the messages before the
    break are written, the break is named, and the run says it failed. (Whole 854x480 frames for
    MCAP: rosbags closes a chunk past 1 MiB, so each frame is a chunk, as a recorder's would be.)"""
    from rosbags.rosbag1 import Writer as Ros1Writer
    from rosbags.rosbag2 import StoragePlugin, Writer

    ros1 = kind == "ros1"
    store = _typestore(ros1)
    path = tmp_path / ("cam.bag" if ros1 else "cam")
    writer = Ros1Writer(path) if ros1 else Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    if ros1:
        writer.chunk_threshold = 20_000  # several chunks, as a recorder writes them
    with writer:
        connection = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for index in range(6):
            message = image_message(store, small[index] if ros1 else frames[index % len(frames)], index, ros1=ros1)
            data = store.serialize_ros1(message, "sensor_msgs/msg/Image") if ros1 else store.serialize_cdr(
                message, "sensor_msgs/msg/Image")
            writer.write(connection, LOG0 + index * 41_666_667, data)
    storage = path if ros1 else next(path.glob("*.mcap"))
    if not ros1:  # a bare .mcap without its summary: what a killed recorder leaves
        storage = shutil.move(storage, tmp_path / "cam.mcap")
        shutil.rmtree(path)
    _cut(Path(storage), 0.7)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert _remove(dog_ref, storage, out) == 1
    said = capsys.readouterr().err
    assert "near byte" in said and "it is truncated or corrupt" in said, said[-2000:]
    assert [r.message for r in caplog.records].count(next(r.message for r in caplog.records
                                                          if "summary or index is missing" in r.message)) == 1
    masks = read_output(out)[f"{TOPIC}/mask"]
    assert 2 <= len(masks) < 6
    assert [image.header.stamp.nanosec for _, image in masks] == [1000 * i for i in range(len(masks))]


def test_a_foreign_type_on_the_image_topic_is_skipped_and_counted(tmp_path, dog_ref, small, capsys):
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = _typestore(False)
    path = tmp_path / "mixed"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        images = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=store)
        strings = writer.add_connection(TOPIC, "std_msgs/msg/String", typestore=store)
        for index in range(3):
            writer.write(images, LOG0 + 2 * index, store.serialize_cdr(image_message(store, small[index], index),
                                                                       "sensor_msgs/msg/Image"))
            writer.write(strings, LOG0 + 2 * index + 1,
                         store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    from dinomask.bags import BagReader

    with BagReader(path) as reader:
        assert reader.count == 3 and reader.foreign == {"std_msgs/msg/String": 3}
    assert _remove(dog_ref, path, tmp_path / "out") == 0
    said = capsys.readouterr()
    assert "3 of 3 messages written" in said.out and "3 skipped (not an image type: 3 std_msgs/msg/String)" in said.out
    assert len(read_output(tmp_path / "out")[f"{TOPIC}/mask"]) == 3


def _compressed(store, data: bytes, fmt: str, index: int = 0):
    types = store.types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=index, nanosec=0), frame_id="c")
    return types["sensor_msgs/msg/CompressedImage"](header=header, format=fmt, data=np.frombuffer(data, np.uint8))


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_compressed_images_are_decoded_by_their_bytes_and_depth_is_refused_by_name(small):
    from dinomask.bags import decode_image
    from dinomask.errors import SourceError

    store = _typestore(False)
    kind = "sensor_msgs/msg/CompressedImage"
    for fmt in ("", "bgr8; jpeg compressed bgr8", "unknown"):
        assert decode_image(_compressed(store, _encoded(small[0], "JPEG"), fmt), kind, "m").shape == small[0].shape
    assert decode_image(_compressed(store, _encoded(small[0], "PNG"), ""), kind, "m").tolist() == small[0].tolist()
    depth = _encoded(np.full((8, 8), 4000, np.uint16), "PNG")
    with pytest.raises(SourceError, match="16-bit or depth"):
        decode_image(_compressed(store, depth, "png"), kind, "m")
    with pytest.raises(SourceError, match="is a depth image"):
        decode_image(_compressed(store, b"\x00" * 12 + depth, "16UC1; compressedDepth png"), kind, "m")
    with pytest.raises(SourceError, match="neither a JPEG nor a PNG"):
        decode_image(_compressed(store, b"\x00\x00\x01\xb3 h264", "h264"), kind, "m")


def test_an_upper_case_mcap_is_read_and_a_folder_without_metadata_says_what_to_do(tmp_path, dog_ref, small, capsys):
    folder = _bag(tmp_path, small[:2], "mcap")
    upper = tmp_path / "CAM.MCAP"
    shutil.copy(next(folder.glob("*.mcap")), upper)
    assert _remove(dog_ref, upper, tmp_path / "out") == 0, capsys.readouterr().err
    assert len(read_output(tmp_path / "out")[f"{TOPIC}/mask"]) == 2
    (folder / "metadata.yaml").unlink()  # what a crashed recorder leaves
    assert _remove(dog_ref, folder, tmp_path / "out2") == 2
    said = capsys.readouterr().err
    assert "no metadata.yaml" in said and "ros2 bag reindex" in said and "pass the file inside" in said, said
    assert main(["live", "-r", str(dog_ref), "--source", str(folder), "--no-window"]) == 2
    assert "no metadata.yaml" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 4. outputs mean one thing

def test_the_mask_is_decided_by_the_number_of_objects_not_by_the_frame():
    from dinomask.composite import mask_values, render

    only_first = np.array([[0, 1], [1, 0]], np.uint8)
    assert mask_values(only_first, 1).tolist() == [[0, 255], [255, 0]]
    assert mask_values(only_first, 2).tolist() == [[0, 1], [1, 0]]  # object 1 reads 1 with two objects, never 255
    image = np.zeros((2, 2, 3), np.uint8)
    assert render(image, only_first > 0, np.zeros((1, 1)), only_first, "mask", objects=2).tolist() == [[0, 1], [1, 0]]
    assert render(image, only_first > 0, np.zeros((1, 1)), only_first, "mask", objects=1).max() == 255
    with pytest.raises(ValueError, match="at least one object"):
        mask_values(only_first, 0)


def test_several_references_write_label_maps_in_image_files(tmp_path, dog_ref, tiny_model_dir, davis):
    from tests.test_cli import _two_refs

    refs = _two_refs(tmp_path, dog_ref, tiny_model_dir, davis)
    frames = sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:3]
    assert main(["remove", *refs, *map(str, frames), "-o", str(tmp_path / "out"), "-q", "--output-kind", "mask"]) == 0
    for path in sorted((tmp_path / "out").glob("*.png")):
        assert set(np.unique(np.asarray(Image.open(path))).tolist()) <= {0, 1, 2}, path


def test_a_transparent_removed_topic_keeps_its_alpha(tmp_path, dog_ref, small):
    bag = _bag(tmp_path, small[:2], "mcap")
    assert _remove(dog_ref, bag, tmp_path / "out", "-b", "transparent", "--bag-outputs", "removed") == 0
    topics = read_output(tmp_path / "out")
    for (_, removed), (_, mask) in zip(topics[f"{TOPIC}/removed"], topics[f"{TOPIC}/mask"]):
        assert removed.encoding == "rgba8" and removed.step == 4 * removed.width
        alpha = np.frombuffer(bytes(removed.data), np.uint8).reshape(removed.height, removed.width, 4)[:, :, 3]
        assert (alpha > 0).tolist() == (np.frombuffer(bytes(mask.data), np.uint8).reshape(alpha.shape) > 0).tolist()


def test_the_bag_summary_reads_as_a_bags(tmp_path, dog_ref, small, capsys, caplog):
    bag = _bag(tmp_path, small[:2], "mcap")
    with caplog.at_level(logging.WARNING):
        assert _remove(dog_ref, bag, tmp_path / "out") == 0
    said = capsys.readouterr().out
    assert f"bag {bag}, topic {TOPIC}: 2 of 2 messages written to {tmp_path / 'out'}, 0 failed" in said, said
