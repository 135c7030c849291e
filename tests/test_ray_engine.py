"""The Ray engine on a local Ray (2 CPUs): same bytes as the local engine, resumable, robust."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from dinomask.batch import OutputOptions, remove_batch  # noqa: E402
from dinomask.composite import Background  # noqa: E402
from dinomask.files import AtomicVideoWriter, plan_outputs  # noqa: E402
from dinomask.preprocess import load_image  # noqa: E402
from dinomask.ray_engine import RayOptions, WorkerSpec, quiet_ray_data, remove_batch_ray  # noqa: E402
from dinomask.reference import Reference  # noqa: E402
from dinomask.segmenter import Segmenter, SegmenterConfig  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    quiet_ray_data()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_backbone, davis, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    inputs = root / "in"
    (inputs / "sub").mkdir(parents=True)
    frames = sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))
    for path in frames[:6]:
        shutil.copy(path, inputs / path.name)
    for path in frames[6:9]:
        shutil.copy(path, inputs / "sub" / path.name)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with AtomicVideoWriter(inputs / "clip.mp4", 10, (854, 480)) as writer:
        for path in frames[:5]:
            writer.write(load_image(path))
    reference = Reference.from_images(tiny_backbone, [davis / "JPEGImages/480p/dog/00000.jpg"],
                                      [davis / "Annotations/480p/dog/00000.png"])
    config = SegmenterConfig.preset("dinomask").replace(temporal=SegmenterConfig().temporal.__class__(alpha=0.5))
    return root, inputs, reference, config, str(tiny_model_dir)


def _spec(setup, options):
    root, inputs, reference, config, model = setup
    return WorkerSpec(model=model, device="cpu", dtype="float32", runtime="torch", references=(reference,),
                      config=config, options=options)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("transparent", [False, True])
def test_ray_writes_exactly_what_the_local_engine_writes(local_ray, setup, tiny_backbone, transparent):
    root, inputs, reference, config, model = setup
    options = OutputOptions(background=Background.parse("transparent" if transparent else "black"))
    name = "alpha" if transparent else "plain"
    local_items, _ = plan_outputs([inputs], root / f"local-{name}", transparent=transparent)
    ray_items, _ = plan_outputs([inputs], root / f"ray-{name}", transparent=transparent)
    # Each actor runs torch on the 1 CPU it reserved; the local run must too, or a different
    # reduction order flips a pixel now and then and the files differ (seen once in CI).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = remove_batch(Segmenter(tiny_backbone, reference, config), local_items, options, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    distributed = remove_batch_ray(_spec(setup, options), ray_items, RayOptions(actors=2, batch_size=2), show_progress=False)
    assert sorted(local.failed) == sorted(distributed.failed) == [str(inputs / "broken.jpg")]
    assert "could not decode" in distributed.failed[str(inputs / "broken.jpg")]
    assert len(distributed.written) == len(local.written) == 10  # 9 images + 1 video
    assert local.frames == distributed.frames == 9 + 5
    assert _files(root / f"local-{name}") == _files(root / f"ray-{name}")  # byte for byte, the video too
    if transparent:
        import json

        stamps = json.loads((root / f"ray-{name}/clip/timestamps.json").read_text())["frames"]
        assert [s["frame"] for s in stamps] == list(range(5))
        assert all(b["timestamp_s"] > a["timestamp_s"] for a, b in zip(stamps, stamps[1:]))


def test_a_killed_run_resumes_without_redoing_finished_work(local_ray, setup, tmp_path, tiny_model_dir, davis):
    root, inputs, reference, config, model = setup
    many = tmp_path / "many"
    many.mkdir()
    frames = sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))
    for i in range(120):
        shutil.copy(frames[i % len(frames)], many / f"f{i:03d}.jpg")
    ref_path = reference.save(tmp_path / "ref.npz")
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    command = [sys.executable, "-c", "import sys; from dinomask.cli import main; sys.exit(main())", "remove",
               "--ref", str(ref_path), str(many), "-o", str(out), "--engine", "ray", "--actors", "1",
               "--runtime", "torch", "--dtype", "float32", "-q"]
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list(out.glob("f*.png"))) < 3:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no output appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Ray's worker processes live in sessions of their own and notice their driver's death a
    # little later: wait until nothing more appears before taking stock
    finished: set[str] = set()
    for _ in range(30):
        now = {p.name for p in out.glob("f*.png")}  # hidden .part files are unfinished writes
        if now == finished:
            break
        finished = now
        time.sleep(2.0)
    assert 3 <= len(finished) < 120
    before = {name: (out / name).stat().st_mtime_ns for name in finished}
    items, _ = plan_outputs([many], out)
    options = OutputOptions()
    report = remove_batch_ray(_spec(setup, options), items, RayOptions(actors=2), show_progress=False)
    assert report.ok
    assert len(report.skipped) == len(finished)
    assert len(report.written) == 120 - len(finished)
    for name, mtime in before.items():
        assert (out / name).stat().st_mtime_ns == mtime  # finished work was not redone
    outputs = sorted(out.glob("f*.png"))
    assert len(outputs) == 120
    assert not list(out.glob(".*.part.png"))  # what the kill left half-written was cleaned up when redone
    for path in outputs:
        Image.open(path).load()  # every output is a complete image, none was a partial one


def test_missing_ray_is_one_clear_message(monkeypatch):
    import builtins

    from dinomask.errors import DinomaskError
    from dinomask.ray_engine import _ray

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(DinomaskError, match=r"pip install 'dinomask\[ray\]'"):
        _ray()


def test_eval_masks_on_ray_gives_the_local_numbers(local_ray, davis, tiny_model_dir):
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.masks import evaluate_masks
    from dinomask.evaluate.plan import MaskEvalPlan, build_predictors
    from dinomask.evaluate.settings import named_settings
    from dinomask.ray_engine import evaluate_masks_ray

    data = load_dataset(davis)
    settings = named_settings(["paper:method=paper", "dinomask:method=dinomask,temporal=0.5", "refs=2:refs=2"])
    plan = MaskEvalPlan(tuple(settings), str(tiny_model_dir), device="cpu", dtype="float32", runtime="torch")
    built = build_predictors(plan)
    local = evaluate_masks(data, built.predictors, built.refs, sweep=built.sweep, max_frames=3, show_progress=False)
    distributed = evaluate_masks_ray(data, plan, built, RayOptions(actors=2), max_frames=3, show_progress=False)
    assert local.to_json() == distributed.to_json()
    assert distributed.dataset["paper"]["frames"] == 6
    assert "paper" in distributed.sweeps
