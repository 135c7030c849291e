"""Offline is fast and honest (issue 32 item 3): a model name without the hub fails in seconds with
every fix listed, and DINOMASK_MODEL is honoured by the API and the command line."""

from __future__ import annotations

import socket
import time

import pytest

from dinomask.cli import main


def _refused_endpoint() -> str:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_model_name_without_the_hub_fails_at_once_with_every_fix(monkeypatch, tmp_path):
    """huggingface_hub retried five times, 8 s apart, before the error; the probe refuses at once.
    No network is touched: the endpoint is a closed port on this machine."""
    import huggingface_hub.constants as constants

    from dinomask.backbones import load_backbone
    from dinomask.errors import ModelNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", _refused_endpoint())
    asked = []
    import dinomask.backbones.sources as sources

    real = sources._load_pretrained
    monkeypatch.setattr(sources, "_load_pretrained",
                        lambda source, local_only: asked.append(local_only) or real(source, local_only))
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as error:
        load_backbone("dinov2_vits14_reg", device="cpu", runtime="torch")
    assert asked == [True]  # the cache was read; the hub, unreachable, was never asked (no retries)
    assert time.perf_counter() - started < 30  # generous: the retries it replaces took 30 s or more
    said = str(error.value)
    for fix in ("cannot be reached", "HF_HUB_OFFLINE=1", "dinomask download", "dinomask random-model", "DINOMASK_MODEL"):
        assert fix in said, (fix, said)


def test_dinomask_model_is_the_default_for_the_api_and_the_command_line(monkeypatch, tiny_model_dir, tmp_path, davis,
                                                                      capsys):
    from dinomask.backbones import load_backbone

    monkeypatch.setenv("DINOMASK_MODEL", str(tiny_model_dir))
    assert load_backbone(runtime="torch").spec.name == load_backbone(str(tiny_model_dir), runtime="torch").spec.name
    image, mask = davis / "JPEGImages/480p/dog/00000.jpg", davis / "Annotations/480p/dog/00000.png"
    ref = tmp_path / "dog.npz"
    assert main(["reference", str(image), "--mask", str(mask), "-o", str(ref), "--runtime", "torch"]) == 0
    assert str(tiny_model_dir) in capsys.readouterr().out
    monkeypatch.setenv("DINOMASK_MODEL", str(tmp_path / "nowhere"))  # DINOMASK_MODEL beats the reference's own name
    assert main(["remove", "-r", str(ref), str(image), "-o", str(tmp_path / "out"), "-q", "--runtime", "torch"]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert main(["remove", "-r", str(ref), str(image), "-o", str(tmp_path / "out"), "-q", "--runtime", "torch",
                 "--model", str(tiny_model_dir)]) == 0  # and --model beats DINOMASK_MODEL


def test_download_without_the_hub_fails_at_once(monkeypatch):
    import huggingface_hub.constants as constants

    from dinomask.backbones import download
    from dinomask.errors import ModelNotFoundError

    monkeypatch.setattr(constants, "ENDPOINT", _refused_endpoint())
    with pytest.raises(ModelNotFoundError, match="cannot be reached.*\\n.*dinomask random-model"):
        download("dinov2_vits14_reg")
