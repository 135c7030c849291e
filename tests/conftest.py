"""Shared fixtures: tiny random DINOv2s (real architecture), a colour backbone with planted
features, and the davis-mini frames. Nothing here touches the network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# ONNX exports made by the fast path go to a throw-away cache, never the user's home
os.environ["DINOMASK_CACHE"] = tempfile.mkdtemp(prefix="dinomask-test-cache-")

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def davis() -> Path:
    """The DAVIS-layout sample kept in the repository (tests/fixtures/davis-mini, CC BY-NC 4.0,
    see its README.md): every clone tests on the same frames."""
    return FIXTURES / "davis-mini"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight Dinov2Model (C=64, 2 blocks) written with save_pretrained."""
    from dinomask.backbones import random_backbone_dir

    return random_backbone_dir(tmp_path_factory.mktemp("tiny") / "model", hidden_size=64, layers=2)


@pytest.fixture(scope="session")
def tiny_reg_model_dir(tmp_path_factory) -> Path:
    """A random-weight Dinov2WithRegistersModel (4 registers)."""
    from dinomask.backbones import random_backbone_dir

    return random_backbone_dir(tmp_path_factory.mktemp("tinyreg") / "model", hidden_size=64, layers=2, registers=4)


@pytest.fixture
def dog_ref(tmp_path, tiny_model_dir, davis):
    """A reference .npz of the davis dog (frame 0 with its mask), made by the CLI with the tiny model."""
    from dinomask.cli import main

    path = tmp_path / "dog.npz"
    code = main([
        "reference", str(davis / "JPEGImages/480p/dog/00000.jpg"), "--mask", str(davis / "Annotations/480p/dog/00000.png"),
        "-o", str(path), "--model", str(tiny_model_dir), "--label", "dog", "--device", "cpu",
    ])
    assert code == 0
    return path


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_dir):
    from dinomask.backbones import load_backbone

    return load_backbone(str(tiny_model_dir), device="cpu", runtime="torch", dtype="float32")


@pytest.fixture
def colour_backbone():
    """A backbone whose patch feature is the patch's mean normalised colour (C = 3) and
    whose CLS is the mean patch: features are planted by painting pixels."""
    from tests.helpers import make_colour_backbone

    return make_colour_backbone()


# ----------------------------------------------------------------------------- skips in CI

#: The only tests allowed to skip in CI: they need Debian's Chromium, which a machine may lack.
ALLOWED_SKIPS = ("tests/serve/test_browser.py",)
_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not report.nodeid.startswith(ALLOWED_SKIPS):
        _unexpected_skips.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr}")


def pytest_sessionfinish(session, exitstatus):
    """In CI (``CI=true``) a skipped test fails the run: every test's data is in the repository."""
    if os.environ.get("CI") == "true" and _unexpected_skips and exitstatus == 0:
        print("\nCI: these tests skipped, and only the browser tests may:\n  " + "\n  ".join(_unexpected_skips))
        session.exitstatus = 1


@pytest.fixture(scope="session")
def tiny_refiner_dir(tmp_path_factory) -> Path:
    """A random-weight SamModel (32 wide, 2 blocks, 256 px input) written with save_pretrained."""
    from dinomask.refine import random_refiner_dir

    return random_refiner_dir(tmp_path_factory.mktemp("tinysam") / "sam", "tiny")
