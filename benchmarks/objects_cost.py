"""What each added object costs a frame (issue 30): one backbone pass serves every reference; each
object adds its similarity maps, its decision and its upsampling.

    python benchmarks/objects_cost.py [--frame ../shared/data/davis-live/JPEGImages/480p/dog/00000.jpg]

True ViT-S/14-reg shape at random weights (speed does not depend on weights), the default runtime,
the default preset, an 854 x 480 frame; prints the median ms of a whole-frame key
(:meth:`Segmenter.key`) and of a flow-carried frame (:meth:`Segmenter.carried_result`, what
``live`` pays on the frames between keys) for 1 to 4 objects, in one run, with the machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _machine() -> str:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import describe

    return describe()


def main(argv: list[str] | None = None) -> int:
    from dinomask import Reference, Segmenter, load_backbone
    from dinomask.backbones import random_backbone_dir
    from dinomask.keyframes import KeyframeSettings
    from dinomask.preprocess import load_image
    from dinomask.segmenter import SegmenterConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", type=Path,
                        default=ROOT.parent / "shared/data/davis-live/JPEGImages/480p/dog/00000.jpg")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    frame_path = args.frame if args.frame.is_file() else ROOT / "examples/dog/reference.jpg"
    image = load_image(frame_path)
    with tempfile.TemporaryDirectory() as work:
        model = random_backbone_dir(Path(work) / "model", arch="dinov2_vits14_reg")
        backbone = load_backbone(str(model))
        print(f"{_machine()}; {backbone.spec.name} ({backbone.runtime}), {image.shape[1]}x{image.shape[0]}")
        height, width = image.shape[:2]
        references = []
        for index in range(4):  # four objects: four quadrants of the frame, each its own reference
            mask = np.zeros((height, width), bool)
            mask[(index // 2) * height // 2:(index // 2 + 1) * height // 2, (index % 2) * width // 2:(index % 2 + 1) * width // 2] = True
            references.append(Reference.from_images(backbone, [image], [mask], label=f"object{index + 1}"))
        config = SegmenterConfig.preset("dinomask").replace(keyframes=KeyframeSettings.parse("async"))
        base = None
        print("objects | key (backbone + decision), median ms | carried frame, median ms | key over 1 object")
        for count in range(1, 5):
            segmenter = Segmenter(backbone, references[:count], config)
            keys, carried = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                result = segmenter.key(image)
                keys.append((time.perf_counter() - started) * 1e3)
                maps = segmenter.carry_maps(result)
                started = time.perf_counter()
                segmenter.carried_result(image, maps)
                carried.append((time.perf_counter() - started) * 1e3)
            key_ms = float(np.median(keys[1:]))
            base = base or key_ms
            print(f"{count:7d} | {key_ms:8.1f} | {np.median(carried[1:]):8.1f} | {key_ms / base:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
