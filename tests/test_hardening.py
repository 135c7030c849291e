"""Odd and hostile inputs through the API and the CLI: each works correctly or fails with a
named error, and nothing is reported as written when it is not what was asked for."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinomask.cli import main
from dinomask.errors import ImageReadError, InvalidReferenceError
from dinomask.files import AtomicVideoWriter
from dinomask.postprocess import ThresholdRule
from dinomask.preprocess import load_image
from dinomask.reference import Reference

GRADIENT = np.tile(np.linspace(0, 1, 64), (16, 1))  # 16 x 64, 0 -> 1 left to right


@pytest.mark.parametrize("mode,scale,dtype", [
    ("I;16", 65535, np.uint16), ("I", 65535, np.int32), ("I", 1_000_000, np.int32), ("F", 1.0, np.float32),
    ("F", 100_000.0, np.float32), ("L", 255, np.uint8),
])
def test_high_bit_depth_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path, mode, scale, dtype):
    planted = (GRADIENT * scale).astype(dtype)
    image = Image.fromarray(planted, mode) if mode != "I;16" else Image.fromarray(planted)
    assert image.mode == mode
    for form in (image, _saved(image, tmp_path)):
        rgb = load_image(form)
        assert rgb.shape == (16, 64, 3)
        assert np.abs(rgb[:, :, 0].astype(float) - GRADIENT * 255).max() <= 1.5, mode


def _saved(image: Image.Image, tmp_path):
    if image.mode in ("I;16", "L"):
        path = tmp_path / f"{image.mode.replace(';', '')}.png"
        image.save(path)
        return path
    path = tmp_path / "f.tiff"
    image.save(path)
    return path


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "HSV", "LAB", "I", "F",
                                  "I;16", "La", "RGBa"])
def test_every_pil_mode_gives_an_rgb_frame_of_the_planted_brightness(mode):
    planted = np.zeros((20, 30, 3), np.uint8)
    planted[:, 15:] = 255  # black left half, white right half
    image = Image.fromarray(planted).convert("L" if mode in ("I", "F", "I;16") else "RGB")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image).astype(np.uint16) * 257))
    elif mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert({"LA": "LA", "PA": "RGBA", "La": "LA", "RGBa": "RGBA"}[mode]).convert(mode)
    else:
        image = image.convert(mode)
    assert image.mode == mode
    rgb = load_image(image)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert rgb[:, :10].mean() < 30 and rgb[:, 20:].mean() > 200, mode


def test_a_decompression_bomb_is_a_named_per_file_failure(tmp_path, dog_ref, davis, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(davis / "JPEGImages/480p/dog/00004.jpg", folder / "a.jpg")
    Image.new("L", (3000, 3000)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # PIL refuses over 2x this
    with pytest.raises(ImageReadError, match="bomb.png is too large to decode safely"):
        load_image(folder / "bomb.png")
    code = main(["remove", "--ref", str(dog_ref), str(folder), "-o", str(tmp_path / "out"), "-q"])
    assert code == 1
    assert (tmp_path / "out/a.png").is_file() and not (tmp_path / "out/bomb.png").exists()
    err = capsys.readouterr().err
    assert "FAILED" in err and "bomb.png" in err and "too large to decode" in err


def test_a_truncated_video_is_reported_as_failed_with_the_counts(tmp_path, dog_ref, davis, capsys):
    frames = [load_image(p) for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:6]]
    video = tmp_path / "in" / "clip.mp4"
    video.parent.mkdir()
    with AtomicVideoWriter(video, 10, (854, 480)) as writer:
        for i in range(30):
            writer.write(frames[i % len(frames)])
    data = bytearray(video.read_bytes())
    start = int(len(data) * 0.4)
    data[start:start + 50_000] = b"\xff" * 50_000  # damaged mid-file: OpenCV decodes 13 of 30 frames, then stops
    broken = tmp_path / "in2" / "clip.mp4"
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    out = tmp_path / "out"
    code = main(["remove", "--ref", str(dog_ref), str(broken), "-o", str(out), "-q", "--keyframes", "every:3"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "FAILED" in err and "clip.mp4" in err and "of the 30 frames its container declares" in err
    assert not (out / "clip.mp4").exists()
    assert main(["remove", "--ref", str(dog_ref), str(video), "-o", str(tmp_path / "ok"), "-q"]) == 0


def test_outputs_respect_the_umask(tmp_path, dog_ref, davis):
    old = os.umask(0o022)
    try:
        assert main(["remove", "--ref", str(dog_ref), str(davis / "JPEGImages/480p/dog/00004.jpg"),
                     "-o", str(tmp_path / "out"), "-q"]) == 0
        reference = Reference.load(dog_ref)
        reference.save(tmp_path / "again.npz")
    finally:
        os.umask(old)
    for path in (tmp_path / "out/00004.png", tmp_path / "again.npz", dog_ref):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize("damage,match", [
    (lambda data: data[: len(data) // 2], "not a dinomask reference file"),
    (lambda data: os.urandom(2000), "not a dinomask reference file"),
    (lambda data: b"", "not a dinomask reference file"),
])
def test_a_damaged_reference_file_is_named_in_a_plain_error(tmp_path, dog_ref, damage, match):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(damage(dog_ref.read_bytes()))
    with pytest.raises(InvalidReferenceError, match=match) as info:
        Reference.load(bad)
    assert str(bad) in str(info.value)


def test_nan_features_in_a_reference_are_refused(tmp_path, dog_ref):
    reference = Reference.load(dog_ref)
    reference.foreground[0, 0] = np.nan
    reference.save(tmp_path / "nan.npz")
    with pytest.raises(InvalidReferenceError, match="NaN or infinite"):
        Reference.load(tmp_path / "nan.npz")


@pytest.mark.parametrize("value", ["-1", "1", "1.5", "-3"])
def test_thresholds_that_cannot_decide_anything_are_refused(value):
    with pytest.raises(ValueError, match="strictly between -1 and 1"):
        ThresholdRule.parse(value)


def _unwritable(tmp_path):
    """A place no process can write: a read-only folder, or under /sys when running as root."""
    if os.geteuid() == 0:
        return Path("/sys/kernel/dinomask-test-output")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


def test_an_unwritable_output_is_refused_before_any_work(tmp_path, tiny_model_dir, dog_ref, davis, capsys, monkeypatch):
    import dinomask.backbones as backbones

    loaded = []
    real = backbones.load_backbone
    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: loaded.append(1) or real(*a, **k))
    target = _unwritable(tmp_path)
    frame = str(davis / "JPEGImages/480p/dog/00008.jpg")
    assert main(["reference", frame, "-o", str(target / "ref.npz"), "--model", str(tiny_model_dir)]) == 2
    assert main(["remove", frame, "-r", str(dog_ref), "-o", str(target)]) == 2
    assert main(["live", "--source", frame, "-r", str(dog_ref), "-o", str(target / "rec.mp4"), "--no-window"]) == 2
    assert main(["eval", "masks", "-d", str(davis), "-o", str(target), "--model", str(tiny_model_dir)]) == 2
    said = capsys.readouterr().err
    assert said.count("cannot write") == 4 and str(target) in said and "Traceback" not in said
    assert not loaded  # refused before the model was loaded, let alone any frame computed


def test_writing_into_the_input_folder_resumes_on_a_rerun(tmp_path, dog_ref, davis, capsys):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("00000.jpg", "00008.jpg"):
        shutil.copy(davis / "JPEGImages/480p/dog" / name, folder / name)
    args = ["remove", str(folder), "-r", str(dog_ref), "-o", str(folder), "--quiet"]
    assert main(args) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["00000.jpg", "00000.png", "00008.jpg", "00008.png"]
    capsys.readouterr()
    assert main(args) == 0  # the first run's PNGs are its outputs, not new inputs
    assert "0 written, 2 skipped" in capsys.readouterr().out
    masks = tmp_path / "masks"
    shutil.copytree(davis / "JPEGImages/480p/dog", masks)
    args = ["remove", str(masks), "-r", str(dog_ref), "-o", str(masks), "--quiet", "--output-kind", "mask"]
    assert main(args) == 0
    assert main(args) == 0  # 00000_mask.png is not taken for an input (that would write 00000_mask_mask.png)
    assert not list(masks.glob("*_mask_mask*")) and len(list(masks.glob("*_mask.png"))) == len(list(masks.glob("*.jpg")))


def test_an_unreadable_kind_of_input_is_counted_in_the_summary(tmp_path, dog_ref, davis, capsys):
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    frame = str(davis / "JPEGImages/480p/dog/00008.jpg")
    assert main(["remove", frame, str(gif), "-r", str(dog_ref), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    said = capsys.readouterr().err
    assert "1 written, 0 skipped (output exists), 1 ignored" in said and f"IGNORED {gif}: not an image or video" in said
