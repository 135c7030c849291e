"""--refine sam --refiner PATH end to end on remove, live, serve and eval (random-weight refiner:
plumbing, sizes and reports, never quality)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from dinomask.cli import main


def test_remove_with_the_refiner_writes_its_masks(tmp_path, dog_ref, davis, tiny_refiner_dir, capsys):
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    plain, refined = tmp_path / "plain", tmp_path / "refined"
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(plain), "--output-kind", "mask", "-q"]) == 0
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(refined), "--output-kind", "mask", "-q",
                 "--refine", "sam", "--refiner", str(tiny_refiner_dir)]) == 0
    a, b = (np.asarray(Image.open(folder / "00004_mask.png")) for folder in (plain, refined))
    assert a.shape == b.shape == (480, 854)
    assert not np.array_equal(a, b)  # the refiner made this mask, not the grid


@pytest.mark.parametrize("args,message", [
    (["--refine", "sam"], "--refine sam needs the refiner's folder"),
    (["--refine", "none", "--refiner", "."], "--refiner was given with --refine none"),
    (["--refine", "crf"], "expected one of none, sam"),
])
def test_refine_options_are_checked_together(tmp_path, dog_ref, davis, args, message, capsys):
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(tmp_path / "o"), "-q", *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split()).replace("│", "").replace("  ", " ")


def test_a_refiner_that_is_not_sam_is_named(tmp_path, dog_ref, davis, tiny_model_dir, capsys):
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(tmp_path / "o"), "-q",
                 "--refiner", str(tiny_model_dir)]) == 2
    assert "expected a SAM-family refiner" in capsys.readouterr().err


def test_live_with_the_refiner_on_a_video(tmp_path, dog_ref, davis, tiny_refiner_dir, capsys):
    from dinomask.files import AtomicVideoWriter
    from dinomask.preprocess import load_image

    video = tmp_path / "dog.mp4"
    with AtomicVideoWriter(video, 10, (854, 480)) as writer:
        for path in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:6]:
            writer.write(load_image(path))
    out = tmp_path / "live.mp4"
    assert main(["live", "-r", str(dog_ref), "--source", str(video), "-o", str(out), "--no-window",
                 "--refiner", str(tiny_refiner_dir), "--roi"]) == 0
    assert out.is_file() and out.stat().st_size > 0
    assert "6 frames processed" in capsys.readouterr().out


def test_eval_masks_scores_each_setting_refined_beside_itself(tmp_path, davis, tiny_model_dir, tiny_refiner_dir):
    out = tmp_path / "eval"
    assert main(["eval", "masks", "-d", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "-q", "--oracle",
                 "--runtime", "torch", "--max-frames", "2", "-s", "quick", "--refine", "sam",
                 "--refiner", str(tiny_refiner_dir)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    mean = metrics["dataset_mean"]
    for name in ("paper", "paper+sam", "dinomask", "dinomask+sam"):
        assert set(mean[name]["oracle"]) >= {"j", "f", "jf"}, name
    assert "refine=sam" in metrics["setting_options"]["dinomask+sam"]
    assert mean["dinomask+sam"]["oracle"]["j"] != mean["dinomask"]["oracle"]["j"]  # the refiner made the ceiling's mask


def test_eval_masks_without_the_refiner_says_so(tmp_path, davis, tiny_model_dir, capsys):
    assert main(["eval", "masks", "-d", str(davis), "--model", str(tiny_model_dir), "-o", str(tmp_path / "e"), "-q",
                 "--runtime", "torch", "--max-frames", "1", "-s", "r:refine=sam"]) == 2
    assert "--refiner PATH" in capsys.readouterr().err


def test_eval_live_with_roi_and_the_refiner(tmp_path, tiny_model_dir, tiny_refiner_dir):
    from tests.evaluate.test_live_eval import write_clip

    root = write_clip(tmp_path / "d", frames=12, step=3)
    out = tmp_path / "out"
    assert main(["eval", "live", "-d", str(root), "--model", str(tiny_model_dir), "-o", str(out), "--oracle",
                 "--costs", "200,20", "--runtime", "torch", "-q", "--keyframes", "auto", "--roi",
                 "--refiner", str(tiny_refiner_dir)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["live"]["roi"] is True and metrics["live"]["refiner"] == str(tiny_refiner_dir)
    assert 0.0 <= metrics["live_j"] <= 1.0


def test_serve_with_the_refiner_returns_its_mask(tmp_path, davis, tiny_model_dir, tiny_refiner_dir):
    pytest.importorskip("fastapi")
    import httpx

    from dinomask.backbones import load_backbone
    from dinomask.preprocess import load_image, load_mask
    from dinomask.reference import Reference
    from dinomask.refine import SamRefiner
    from dinomask.segmenter import Segmenter
    from dinomask.serve.app import ServeConfig, create_app
    from tests.serve.conftest import running

    backbone = load_backbone(str(tiny_model_dir), device="cpu", runtime="torch", dtype="float32")
    refiner = SamRefiner.load(tiny_refiner_dir, device="cpu")
    image, truth = davis / "JPEGImages/480p/dog/00000.jpg", davis / "Annotations/480p/dog/00000.png"
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    with running(create_app(backbone, ServeConfig(), refiner)) as url:
        created = httpx.post(f"{url}/v1/references", files={"image": ("d.jpg", image.read_bytes(), "image/jpeg"),
                                                            "mask": ("m.png", truth.read_bytes(), "image/png")})
        assert created.status_code == 201, created.text
        ref_id = created.json()["id"]
        response = httpx.post(f"{url}/v1/remove", params={"reference": ref_id, "output": "mask"},
                              files={"image": ("f.jpg", frame.read_bytes(), "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    served = np.asarray(Image.open(io.BytesIO(response.content))) > 127
    reference = Reference.from_images(backbone, [load_image(image)], [load_mask(truth)])
    expected = Segmenter(backbone, reference, refiner=refiner).predict(load_image(frame))
    assert expected.refined and np.array_equal(served, expected.mask)


#: Frames the segmenter takes and the refiner's processor did not (issue 26): 1 and 3 px high were
#: taken for channels-first, 1 x 5000 resized to 0 px.
THIN = {"1x40": (1, 40), "3x40": (3, 40), "40x3": (40, 3), "1x5000": (1, 5000)}


def _thin(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(height * 7919 + width)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_the_refiner_takes_every_frame_the_segmenter_takes(tiny_model_dir, tiny_refiner_dir, dog_ref):
    from dinomask.backbones import load_backbone
    from dinomask.reference import Reference
    from dinomask.refine import SamRefiner
    from dinomask.segmenter import Segmenter

    backbone = load_backbone(str(tiny_model_dir), device="cpu", runtime="torch", dtype="float32")
    segmenter = Segmenter(backbone, Reference.load(dog_ref), refiner=SamRefiner.load(tiny_refiner_dir, device="cpu"))
    plain = Segmenter(backbone, Reference.load(dog_ref))
    for name, (height, width) in THIN.items():
        result = segmenter.predict(_thin(height, width))
        assert result.mask.shape == (height, width), name
        if name == "1x5000":  # too thin for SAM's resize: the grid's own mask, and the reason
            assert not result.refined and "too thin for the refiner" in result.refine_skipped
            assert np.array_equal(result.mask, plain.predict(_thin(height, width)).mask)
        else:
            assert result.refined and result.refine_skipped is None, name


def test_remove_and_live_on_thin_frames_with_the_refiner_name_the_file_and_go_on(tmp_path, dog_ref, tiny_refiner_dir,
                                                                                capsys, caplog):
    folder = tmp_path / "thin"
    folder.mkdir()
    for name, (height, width) in THIN.items():
        Image.fromarray(_thin(height, width)).save(folder / f"{name}.png")
    with caplog.at_level("WARNING", logger="dinomask"):
        assert main(["remove", "-r", str(dog_ref), str(folder), "-o", str(tmp_path / "out"), "-q",
                     "--refiner", str(tiny_refiner_dir)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{n}.png" for n in THIN)
    assert "1x5000.png: a 5000x1 px frame is too thin for the refiner" in caplog.text
    assert "its unrefined mask is written" in caplog.text
    # live on the same folder: every frame shown, the run ends well (it ended with rc 2)
    assert main(["live", "-r", str(dog_ref), "--source", str(folder), "--no-window", "--refiner",
                 str(tiny_refiner_dir)]) == 0, capsys.readouterr().err
    assert f"{len(THIN)} frames processed" in capsys.readouterr().out


def test_serve_with_the_refiner_takes_thin_frames_and_the_stream_stays_open(davis, tiny_model_dir, tiny_refiner_dir):
    pytest.importorskip("fastapi")
    import asyncio

    import httpx
    import websockets

    from dinomask.backbones import load_backbone
    from dinomask.refine import SamRefiner
    from dinomask.serve.app import ServeConfig, create_app
    from tests.serve.conftest import running

    backbone = load_backbone(str(tiny_model_dir), device="cpu", runtime="torch", dtype="float32")
    refiner = SamRefiner.load(tiny_refiner_dir, device="cpu")
    image, truth = davis / "JPEGImages/480p/dog/00000.jpg", davis / "Annotations/480p/dog/00000.png"

    def png(height: int, width: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(_thin(height, width)).save(buffer, format="PNG")
        return buffer.getvalue()

    with running(create_app(backbone, ServeConfig(), refiner)) as url:
        created = httpx.post(f"{url}/v1/references", files={"image": ("d.jpg", image.read_bytes(), "image/jpeg"),
                                                            "mask": ("m.png", truth.read_bytes(), "image/png")})
        ref_id = created.json()["id"]
        for name, (height, width) in THIN.items():
            response = httpx.post(f"{url}/v1/remove", params={"reference": ref_id, "output": "mask"},
                                  files={"image": (f"{name}.png", png(height, width), "image/png")}, timeout=60)
            assert response.status_code == 200, (name, response.text)
            assert np.asarray(Image.open(io.BytesIO(response.content))).shape[:2] == (height, width)
            assert ("too thin" in response.headers.get("x-dinomask-refine-skipped", "")) == (name == "1x5000")

        async def stream() -> list[dict]:
            answers = []
            async with websockets.connect(url.replace("http", "ws") + f"/v1/stream?reference={ref_id}") as ws:
                for height, width in (THIN["1x5000"], THIN["1x40"], (48, 64)):
                    await ws.send(png(height, width))
                    answers.append(json.loads(await ws.recv()))
                    await ws.recv(), await ws.recv()  # the result and the heatmap
            return answers

        answers = asyncio.run(stream())
    assert [a["frame"] for a in answers] == [0, 1, 2]  # every frame answered, the stream still open
    assert "too thin" in answers[0]["refine_skipped"] and "refine_skipped" not in answers[1]
