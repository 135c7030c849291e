"""The soak benchmark's short version: live and serve for 60 s, no growth (benchmarks/soak.py;
the 30-minute figures are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_sixty_seconds_of_live_and_serve_without_growth(tmp_path):
    pytest.importorskip("psutil")
    pytest.importorskip("websockets")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import soak
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    code = soak.main(["--seconds", "60", "--arch", "tiny", "--interval", "2", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "soak.json").read_text())
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert len(result["samples"]) >= 20 and result["live_exit"] == 143 and result["taught_reference_saved"]
    assert code == 0, json.dumps(result["verdicts"], indent=1)
