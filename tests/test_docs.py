"""The documentation site builds with --strict, and every public name has a docstring on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")


def test_every_public_name_and_its_public_members_have_a_docstring():
    """What the API page shows: griffe reads the same docstrings mkdocstrings renders."""
    import griffe

    import dinomask

    package = griffe.load("dinomask", search_paths=[str(ROOT / "src")])
    missing = []
    for name in dinomask.__all__:
        if name.startswith("__"):
            continue
        obj = package[name]
        if not (obj.docstring and obj.docstring.value.strip()):
            missing.append(name)
        if obj.is_class:
            for member_name, member in obj.members.items():
                if member_name.startswith("_") or member.is_alias or member.is_attribute:
                    continue
                if not (member.docstring and member.docstring.value.strip()):
                    missing.append(f"{name}.{member_name}")
    assert not missing, f"public names without a docstring: {missing}"


def test_the_site_builds_strict_with_generated_cli_http_and_api_pages(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    cli = (site / "cli" / "index.html").read_text()
    for command in ("reference", "remove", "live", "serve", "eval masks", "random-model", "--version"):
        assert command in cli, command
    http = (site / "http-api" / "index.html").read_text()
    assert "/v1/remove" in http and "/v1/references/{ref_id}/download" in http
    api = (site / "api" / "index.html").read_text()
    import dinomask

    for name in dinomask.__all__:
        if not name.startswith("__"):
            assert f"dinomask.{name}" in api, name
