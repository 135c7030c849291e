"""Schema-based fuzzing: schemathesis against the app's own OpenAPI, over real HTTP: no 500s."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_schemathesis_finds_no_server_errors(server, tmp_path):
    st = shutil.which("st") or str(Path(sys.executable).parent / "st")
    if not Path(st).exists():
        pytest.skip("schemathesis is not installed")
    run = subprocess.run(
        [st, "run", f"{server}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "25",
         "--generation-deterministic", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    summary = run.stdout[-2500:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "failed" not in summary.split("Test cases:")[-1], summary
