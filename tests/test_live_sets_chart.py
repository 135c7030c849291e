"""benchmarks/live_sets_chart.py (issue 30): the live figures of several sets in one picture, read
from the metrics.json files eval live writes; a set with no absent frame has no bar, not a zero."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import import_benchmark


@pytest.fixture()
def chart():
    return import_benchmark("live_sets_chart")


def _write(folder: Path, summary: dict) -> str:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"schedules": {"async": summary}}))
    return str(folder)


def test_the_chart_reads_eval_lives_fields_and_draws_every_set(tmp_path, chart):
    from dinomask.evaluate.live_scores import LIVE_METRICS

    assert set(chart.FIELDS) <= set(LIVE_METRICS)  # the names eval live writes, not a copy that drifts
    plain = _write(tmp_path / "plain", {"live_j": 0.8, "present_live_j": None, "absent_frames": 0,
                                        "absent_fp_rate": None, "reacquire_frames_mean": None,
                                        "reacquire_frames_max": None, "reacquire_missed": None})
    cut = _write(tmp_path / "cut", {"live_j": 0.7, "present_live_j": 0.65, "absent_frames": 48,
                                    "absent_fp_rate": 0.04, "reacquire_frames_mean": 2.5,
                                    "reacquire_frames_max": 4, "reacquire_missed": 1,
                                    "late_by_one_absent_fp_rate": 0.04, "late_by_one_reacquire_frames_mean": 2.0})
    out = tmp_path / "chart.png"
    assert chart.main(["--run", f"plain={plain}", "--run", f"cut={cut}", "-o", str(out), "--caption", "test"]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[1] > 600 and image.shape[0] > 300
    red = (image[..., 0] > 150) & (image[..., 1] < 110) & (image[..., 2] < 110)
    assert red.sum() > 20  # the missed return's cross
    with pytest.raises(SystemExit, match="exists"):
        chart.main(["--run", f"plain={plain}", "-o", str(out)])


def test_the_chart_says_what_is_wrong_with_its_input(tmp_path, chart):
    with pytest.raises(SystemExit, match="NAME=DIR"):
        chart.read_runs(["no-folder"], "async")
    with pytest.raises(SystemExit, match="no metrics.json"):
        chart.read_runs([f"x={tmp_path}"], "async")
    folder = _write(tmp_path / "one", {"live_j": 0.5})
    with pytest.raises(SystemExit, match="no schedule 'sync'"):
        chart.read_runs([f"x={folder}"], "sync")
