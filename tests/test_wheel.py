"""The wheel is the product: scripts/check_wheel.sh builds it, checks it with twine, installs it
alone into a fresh environment outside the source tree and runs every user-facing command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("git") is None, reason="the check builds from the tracked files (git ls-files)")
def test_the_wheel_alone_runs_every_user_facing_command():
    pytest.importorskip("build")
    pytest.importorskip("twine")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "check_wheel.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=1500, env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                                             "BUILD_PY": sys.executable})  # build with this test's own interpreter
    print(done.stdout)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "passed: the wheel alone runs every user-facing command" in done.stdout
