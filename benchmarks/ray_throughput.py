"""Throughput of ``dinomask remove``: the local engine against Ray with 1 and 2 actors.

Copies the davis-mini frames N times into a temporary folder, then times each engine on
the same inputs (fresh output folders), after one warm-up run so model loading and the
ONNX export are not counted for the local engine; Ray's times include starting the actor
pool (model load per actor), which is what a user waits for. A benchmark: asserts nothing.

    python benchmarks/ray_throughput.py [--copies 4] [--model DIR] [--runtime auto]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--model", default=None, help="default: a random ViT-S/14 with registers (true shape)")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--dataset", type=Path, default=DAVIS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="dinomask-ray-bench-"))
    os.environ.setdefault("DINOMASK_CACHE", str(work / "cache"))

    import ray

    from dinomask.backbones import load_backbone, random_backbone_dir
    from dinomask.batch import OutputOptions, remove_batch
    from dinomask.files import plan_outputs
    from dinomask.ray_engine import RayOptions, WorkerSpec, quiet_ray_data, remove_batch_ray
    from dinomask.reference import Reference
    from dinomask.segmenter import Segmenter, SegmenterConfig

    model = args.model
    if model is None:
        model = str(work / "vits14")
        random_backbone_dir(model, arch="dinov2_vits14_reg")  # the default backbone's true shape
    inputs = work / "in"
    inputs.mkdir()
    frames = sorted((args.dataset / "JPEGImages/480p").glob("*/*.jpg"))
    for copy in range(args.copies):
        for path in frames:
            shutil.copy(path, inputs / f"{copy}_{path.parent.name}_{path.name}")
    count = len(list(inputs.iterdir()))
    backbone = load_backbone(model, device="cpu", runtime=args.runtime)
    reference = Reference.from_images(backbone, [args.dataset / "JPEGImages/480p/dog/00000.jpg"],
                                      [args.dataset / "Annotations/480p/dog/00000.png"])
    config = SegmenterConfig.preset("dinomask")
    options = OutputOptions()
    segmenter = Segmenter(backbone, reference, config)
    warm, _ = plan_outputs([inputs], work / "warm")
    remove_batch(segmenter, warm[:2], options, show_progress=False)

    rows = []
    items, _ = plan_outputs([inputs], work / "local")
    start = time.perf_counter()
    report = remove_batch(segmenter, items, options, show_progress=False)
    rows.append(("local (1 process, all cores)", time.perf_counter() - start, report))
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    quiet_ray_data()
    spec = WorkerSpec(model=model, device="cpu", dtype="auto", runtime=args.runtime, references=(reference,),
                      config=config, options=options)
    for actors in (1, 2):
        items, _ = plan_outputs([inputs], work / f"ray{actors}")
        start = time.perf_counter()
        report = remove_batch_ray(spec, items, RayOptions(actors=actors), show_progress=False)
        rows.append((f"ray, {actors} actor{'s' if actors > 1 else ''} (1 thread each)", time.perf_counter() - start, report))
    ray.shutdown()
    print(f"# {count} images of 854x480, model {model} ({getattr(backbone, 'runtime', 'torch')}), {os.cpu_count()} CPUs")
    base = rows[0][1]
    for name, seconds, report in rows:
        print(f"{name:34s} {seconds:7.1f} s  {report.frames / seconds:6.2f} images/s  {base / seconds:5.2f}x local"
              f"  ({len(report.written)} written, {len(report.failed)} failed)")


if __name__ == "__main__":
    main()
