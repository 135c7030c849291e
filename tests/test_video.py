from __future__ import annotations

import time

import numpy as np
import pytest

from dinomask.errors import SourceError
from dinomask.video import FrameSource, LatestSlot, SourceSettings, parse_source, run_live


class FakeCamera:
    """A cv2.VideoCapture stand-in that delivers ``frames`` frames, then fails."""

    def __init__(self, frames: int, opens: bool = True):
        self.left = frames
        self.opens = opens

    def isOpened(self):
        return self.opens

    def read(self):
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_parse_source():
    assert parse_source("0") == 0
    assert parse_source("rtsp://cam/1") == "rtsp://cam/1"
    assert parse_source("clip.mp4") == "clip.mp4"


def test_camera_that_cannot_be_opened_is_a_clear_error():
    with pytest.raises(SourceError, match="could not open camera 0"):
        FrameSource(0, open_capture=lambda s: FakeCamera(0, opens=False))


def test_camera_that_disconnects_for_good_stops_cleanly_after_retrying():
    opened = []

    def factory(source):
        opened.append(source)
        return FakeCamera(3 if len(opened) == 1 else 0, opens=len(opened) == 1)

    source = FrameSource(0, SourceSettings(retry_seconds=0.3, retry_interval=0.05), open_capture=factory)
    frames = []
    with pytest.raises(SourceError, match="disconnected and did not come back.*after 3 frames"):
        for frame in source:
            frames.append(frame)
    assert len(frames) == 3
    assert len(opened) > 2  # it did retry


def test_camera_that_comes_back_continues():
    cameras = iter([FakeCamera(2), FakeCamera(0, opens=False), FakeCamera(3)])
    source = FrameSource(0, SourceSettings(retry_seconds=2, retry_interval=0.01), open_capture=lambda s: next(cameras))
    frames = []
    with pytest.raises(StopIteration):
        for frame in source:
            frames.append(frame)
            if len(frames) == 4:
                raise StopIteration
    assert source.reconnects == 1
    assert [f.index for f in frames] == [0, 1, 2, 3]


def test_latest_slot_keeps_only_the_newest_and_counts_drops():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take() == 4
    assert slot.dropped == 4
    slot.close()
    assert slot.take() is None


def test_live_loop_runs_stages_concurrently_and_reports(tmp_path):
    source = FrameSource(0, open_capture=lambda s: FakeCamera(30))
    source.settings = SourceSettings(retry_seconds=0.0)
    seen = []

    def process(frame, meter):
        time.sleep(0.002)
        meter.add("backbone", 0.002)
        return frame.index

    def output(frame, result, meter):
        seen.append(result)
        return True

    with pytest.raises(SourceError):  # a camera that ends is a lost camera
        run_live(source, process, output)

    seen.clear()
    source = FrameSource("clip.mp4", open_capture=lambda s: FakeCamera(30))
    stats = run_live(source, process, output)
    assert stats.frames_captured == 30
    assert stats.frames_processed == 30  # a file is read one frame ahead: nothing dropped before the model
    assert stats.frames_output >= 1
    assert "backbone_ms" in stats.stage_ms and "capture_ms" in stats.stage_ms
    assert seen == sorted(seen)  # output never goes back in time


def test_live_loop_stops_when_output_says_so():
    source = FrameSource("clip.mp4", open_capture=lambda s: FakeCamera(1000))
    stats = run_live(source, lambda f, m: (time.sleep(0.001), f.index)[1], lambda f, r, m: r < 5)
    assert stats.frames_processed < 1000


def test_stage_meter_is_safe_to_read_while_other_threads_write():
    import threading

    from dinomask.video import StageMeter

    meter = StageMeter(window=50)
    stop = threading.Event()
    errors = []

    def writer():
        while not stop.is_set():
            meter.add("backbone", 0.001)
            meter.tick()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            try:
                meter.summary()
            except RuntimeError as exc:  # "deque mutated during iteration" without the lock
                errors.append(exc)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert meter.summary()["backbone_ms"] == pytest.approx(1.0)


def test_retry_seconds_bound_opencvs_own_stream_timeouts():
    """A stream that accepts the connection and never answers: OpenCV's own timeouts (30 s each
    by default) are set to --retry-seconds, so the user's bound holds (issue 21: 37 s with 2)."""
    import socket
    import threading
    import time

    from dinomask.errors import SourceError
    from dinomask.video import FrameSource, SourceSettings

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in range(4)], daemon=True).start()
    started = time.monotonic()
    with pytest.raises(SourceError, match="could not open"):
        FrameSource(f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg", SourceSettings(retry_seconds=1))
    assert time.monotonic() - started < 10  # a bound, not a speed: without it OpenCV waits 30 s
    server.close()
