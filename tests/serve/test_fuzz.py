"""Schema-based fuzzing: schemathesis runs every check (``--checks all``) against the app's own
OpenAPI over real HTTP: no 500s, only documented status codes, headers and error bodies,
schema-invalid data rejected, and (with a token) no operation that ignores auth."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import running

CONFIG = Path(__file__).with_name("schemathesis.toml")


def _schemathesis(url: str, cwd: Path, *extra: str) -> None:
    st = shutil.which("st") or str(Path(sys.executable).parent / "st")
    if not Path(st).exists():
        pytest.skip("schemathesis is not installed")
    run = subprocess.run(
        [st, "--config-file", str(CONFIG), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "25",
         "--generation-deterministic", "--request-timeout", "30", *extra],
        capture_output=True, text=True, timeout=600, cwd=cwd,
    )
    summary = run.stdout[-4000:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "failed" not in summary.split("Test cases:")[-1], summary


def test_schemathesis_all_checks_pass(server, tmp_path):
    _schemathesis(server, tmp_path)


def test_schemathesis_all_checks_pass_with_a_token(serve_backbone, tmp_path):
    from dinomask.serve.app import ServeConfig, create_app

    config = ServeConfig(token="s3cret", max_upload_bytes=3 * 1024 * 1024, max_pixels=5_000_000, queue_size=8)
    with running(create_app(serve_backbone, config)) as url:
        _schemathesis(url, tmp_path, "--header", "Authorization: Bearer s3cret")
