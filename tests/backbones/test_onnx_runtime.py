from __future__ import annotations

import numpy as np
import pytest
import torch

from dinomask.backbones import load_backbone
from dinomask.cli import main
from dinomask.features import extract_features
from dinomask.backbones import MIN_FIDELITY, OnnxBackbone
from dinomask.backbones.onnx_runtime import features_fidelity, onnx_for
from dinomask.preprocess import InputGeometry, load_image, to_pixel_values
from dinomask.reference import Reference
from dinomask.segmenter import Segmenter

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def reg_backbone(tiny_reg_model_dir):
    return load_backbone(str(tiny_reg_model_dir), device="cpu", runtime="torch", dtype="float32")


@pytest.mark.parametrize("int8", [False, True])
def test_onnx_features_stay_faithful_on_real_images_at_any_size(reg_backbone, davis, int8):
    onnx = onnx_for(reg_backbone, int8=int8)
    assert isinstance(onnx, OnnxBackbone)
    assert onnx.spec == reg_backbone.spec  # same fingerprint: references carry over
    for frame, geometry in [("dog/00000.jpg", InputGeometry(518)), ("car-shadow/00020.jpg", InputGeometry(224, False))]:
        image = load_image(davis / "JPEGImages/480p" / frame)
        grid = geometry.grid(*image.shape[:2], 14)
        pixels = to_pixel_values([image, image], reg_backbone.spec, grid)
        expected, got = reg_backbone(pixels), onnx(pixels)
        assert got.patches.shape == expected.patches.shape == (2, *grid, 64)
        minimum, mean = features_fidelity(expected, got)
        assert minimum >= MIN_FIDELITY, f"int8={int8}: min cosine {minimum}"
        if not int8:
            assert torch.allclose(got.patches, expected.patches, atol=1e-4)


def test_auto_runtime_on_cpu_is_the_onnx_fast_path_and_masks_agree(tiny_model_dir, tiny_backbone, davis):
    fast = load_backbone(str(tiny_model_dir), device="cpu")
    assert isinstance(fast, OnnxBackbone) and fast.quantization == "int8"
    ref = Reference.from_images(tiny_backbone, [davis / "JPEGImages/480p/dog/00000.jpg"], [davis / "Annotations/480p/dog/00000.png"])
    frame = davis / "JPEGImages/480p/dog/00008.jpg"
    plain = Segmenter(tiny_backbone, ref, method="paper").predict(frame)
    quick = Segmenter(fast, ref, method="paper").predict(frame)
    assert np.abs(plain.similarity - quick.similarity).max() < 0.05
    # and the export is cached: a second load does not export again
    again = load_backbone(str(tiny_model_dir), device="cpu")
    assert again.path == fast.path


def test_export_onnx_command_and_loading_the_file(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export-onnx", "--model", str(tiny_model_dir), "-o", str(out), "--int8"]) == 0
    said = capsys.readouterr().out
    assert "per-patch cosine to fp32 torch" in said and "(ok)" in said
    backbone = load_backbone(str(out))
    assert isinstance(backbone, OnnxBackbone) and backbone.quantization == "int8"
    (features,) = extract_features(backbone, [np.zeros((70, 98, 3), np.uint8)], InputGeometry(70))
    assert features.patches.shape == (5, 7, 64)
    assert main(["export-onnx", "--model", str(tiny_model_dir), "-o", str(out)]) == 2  # no silent overwrite
    (tmp_path / "bare.onnx").write_bytes(out.read_bytes())
    with pytest.raises(Exception, match="export-onnx"):
        load_backbone(str(tmp_path / "bare.onnx"))


def test_runtime_choices_are_checked(tiny_model_dir):
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_backbone(str(tiny_model_dir), runtime="tensorrt")


def test_a_shared_export_keeps_the_name_of_the_copy_the_user_loaded(tmp_path, tiny_model_dir, davis):
    """The ONNX cache is keyed by the weights' fingerprint: two copies share one export, and each
    load reports (and each reference records) its own path, so deleting the first copy breaks nothing."""
    import shutil

    first, second = tmp_path / "p1", tmp_path / "p2"
    shutil.copytree(tiny_model_dir, first)
    shutil.copytree(tiny_model_dir, second)
    one, two = load_backbone(str(first), device="cpu"), load_backbone(str(second), device="cpu")
    assert isinstance(two, OnnxBackbone) and one.path == two.path  # one export, shared
    assert (one.spec.name, two.spec.name) == (str(first), str(second))
    ref = tmp_path / "ref.npz"
    assert main(["reference", str(davis / "JPEGImages/480p/dog/00000.jpg"), "--mask",
                 str(davis / "Annotations/480p/dog/00000.png"), "-o", str(ref), "--model", str(second)]) == 0
    assert Reference.load(ref).backbone.name == str(second)
    shutil.rmtree(first)
    out = tmp_path / "out"
    assert main(["remove", str(davis / "JPEGImages/480p/dog/00008.jpg"), "-r", str(ref), "-o", str(out)]) == 0
    assert (out / "00008.png").is_file()


@pytest.mark.parametrize("cores, alone, beside", [(1, 1, 1), (2, 2, 1), (16, 16, 15)])
def test_beside_a_loop_the_model_leaves_one_core_to_it(monkeypatch, tiny_model_dir, cores, alone, beside):
    """Live's keys run beside the work every frame waits on: ONNX Runtime takes every usable core
    but one (measured on 2 cores: p95 41-44 -> 31-36 ms quiet, live J not lower); alone, all."""
    from dinomask.backbones import onnx_runtime

    monkeypatch.delenv("DINOMASK_THREADS", raising=False)
    monkeypatch.setattr(onnx_runtime, "usable_cores", lambda: cores)
    assert (onnx_runtime.default_threads(True), onnx_runtime.default_threads(False)) == (alone, beside)
    for busy_wait, expected in ((True, alone), (False, beside)):
        backbone = load_backbone(str(tiny_model_dir), device="cpu", runtime="onnx", busy_wait=busy_wait)
        assert backbone.session.get_session_options().intra_op_num_threads == expected
    monkeypatch.setenv("DINOMASK_THREADS", "3")  # the user's word wins
    backbone = load_backbone(str(tiny_model_dir), device="cpu", runtime="onnx", busy_wait=False)
    assert backbone.session.get_session_options().intra_op_num_threads == 3


def test_a_second_load_opens_the_export_at_once_with_the_same_features(tmp_path, tiny_reg_model_dir, monkeypatch):
    """Issue 32 item 6: the export chosen for a model's files is remembered by them (paths, sizes,
    modification times); the next load opens it without transformers or the torch model, and gives
    the same features to the bit. A changed file is a new key: the long way again."""
    import os
    import subprocess
    import sys

    from dinomask.backbones import loader

    monkeypatch.setenv("DINOMASK_CACHE", str(tmp_path / "cache"))
    pixels = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, 14 * 5, 14 * 7)).astype(np.float32))
    first = load_backbone(str(tiny_reg_model_dir), device="cpu")
    assert isinstance(first, OnnxBackbone) and loader._ready_entry(str(tiny_reg_model_dir), "auto").is_file()
    calls = []
    monkeypatch.setattr(loader, "load_model", lambda source: calls.append(source) or (_ for _ in ()).throw(AssertionError))
    second = load_backbone(str(tiny_reg_model_dir), device="cpu")
    assert calls == [] and second.spec == first.spec and second.random_weights == first.random_weights
    a, b = first(pixels), second(pixels)
    assert torch.equal(a.patches, b.patches) and torch.equal(a.cls, b.cls)
    code = ("import sys; from dinomask.backbones import load_backbone; "
            f"load_backbone({str(tiny_reg_model_dir)!r}, device='cpu'); "
            "print('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "DINOMASK_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"})
    assert done.stdout.strip() == "False", done.stderr[-2000:]
    weights = next(tiny_reg_model_dir.glob("*.safetensors"))
    stat = weights.stat()
    try:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        monkeypatch.undo()
        monkeypatch.setenv("DINOMASK_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(loader, "load_model", lambda source: calls.append(source) or (_ for _ in ()).throw(AssertionError))
        with pytest.raises(AssertionError):
            load_backbone(str(tiny_reg_model_dir), device="cpu")
        assert calls == [str(tiny_reg_model_dir)]
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("size", [(14, 14), (392, 700), (518, 518), (98, 1400)])
def test_the_runtime_position_table_interpolates_as_the_torch_models_embeddings(tmp_path, tiny_reg_model_dir, size):
    """The ONNX runtime interpolates the export's position table without building transformers'
    module: the torch model's own embeddings give the same numbers, to the bit."""
    from dinomask.backbones.onnx_runtime import PositionInputs, _position_table

    backbone = load_backbone(str(tiny_reg_model_dir), device="cpu", runtime="torch", dtype="float32")
    onnx = onnx_for(backbone, int8=False)
    config = onnx._positions.config
    p, dim = config["patch_size"], config["hidden_size"]
    tokens = torch.zeros(1, 1 + (size[0] // p) * (size[1] // p), dim)
    with torch.no_grad():
        from_model = backbone.model.embeddings.interpolate_pos_encoding(tokens, *size).float().numpy()
    from_table = PositionInputs(config, _position_table(config, onnx.path.with_suffix(".embeddings.safetensors")))(*size)
    assert np.array_equal(from_model, from_table["position_embeddings"])


class _CancelledDuringRun:
    """A session whose run is cancelled from "another thread" as it starts: the backbone's
    :meth:`OnnxBackbone.cancel` is called between the run's start and ONNX Runtime's work."""

    def __init__(self, backbone: OnnxBackbone):
        self.backbone, self.session = backbone, backbone.session

    def run(self, outputs, inputs, options=None):
        assert self.backbone.cancel()  # a run is in progress: it is told to stop
        return self.session.run(outputs, inputs, options)


def test_a_run_in_progress_can_be_cancelled_and_the_next_one_runs(reg_backbone):
    """A key made for the scene before a cut is stopped (issue 30): ONNX Runtime's terminate flag,
    set on that run's options from another thread, raises RunCancelled; nothing else changes."""
    from dinomask.errors import RunCancelled

    onnx = onnx_for(reg_backbone, int8=False)
    assert onnx.can_cancel and not reg_backbone.can_cancel and not reg_backbone.cancel()
    pixels = torch.zeros(1, 3, 56, 84)
    expected = onnx(pixels).patches
    assert not onnx.cancel()  # between runs: nothing to stop
    plain = onnx.session
    onnx.session = _CancelledDuringRun(onnx)
    with pytest.raises(RunCancelled, match="cancelled"):
        onnx(pixels)
    onnx.session = plain
    assert torch.equal(onnx(pixels).patches, expected)  # the cancel touched only the run it stopped
