"""benchmarks/peers.py on two frames with a few layers of each peer (issue 33 item 7): SAM 2.1
and EdgeTAM stream a clip from a first-frame mask beside this project's key, and the table,
the JSON and the plot carry every system's figures. The published shapes run in the benchmark
itself (figures in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import import_benchmark


def test_peers_stream_two_frames_beside_the_key(tmp_path, davis, capsys):
    pytest.importorskip("transformers.models.sam2_video")
    peers = import_benchmark("peers")
    code = peers.main(["--tiny", "--frames", "2", "--data", str(davis), "--clip", "dog",
                       "--json", str(tmp_path / "peers.json"), "--plot", str(tmp_path / "peers.png")])
    assert code == 0
    result = json.loads((tmp_path / "peers.json").read_text())
    rows = {row["system"]: row for row in result["rows"] if row["system"] != "dinomask key"}
    assert set(rows) == {"sam2.1-tiny", "edgetam"}
    for name, row in rows.items():
        assert "error" not in row, row
        assert len(row["ms"]) == len(row["rss_mib"]) == 2 and row["input"] == "1024x1024"
        assert row["median_ms"] > 0 and row["ratio_to_key"] > 0 and row["peak_rss_mib"] > 100
        assert all(0.0 <= area <= 1.0 for area in row["mask_area"])
    keys = [row for row in result["rows"] if row["system"] == "dinomask key"]
    assert len(keys) == 2 and all(len(k["ms"]) == 2 for k in keys)  # first and last: a drifting machine shows
    table = capsys.readouterr().out
    assert "| sam2.1-tiny |" in table and "| edgetam |" in table and result["machine"] in table
    assert (tmp_path / "peers.png").stat().st_size > 10_000
