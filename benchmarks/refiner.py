"""Time per frame of the SAM-family refiner (``--refine sam``) at the true shape of SAM ViT-B.

SAM ViT-B (``facebook/sam-vit-base``, 94 M parameters, 1024 px input) at random weights:
quality cannot be measured here, only the cost, which does not depend on the weights. The
default segmenter (ViT-S/14-reg true shape, random weights, default runtime) runs on a
davis-mini frame at 854x480; the refiner's image encoder and prompt decoder are timed
separately (prompted from the ground truth on the default grid, as a perfect patch classifier
would prompt it), beside the segmenter's own time per frame, so the ratio says what
refinement costs on this machine.

    python benchmarks/refiner.py            # 5 timed frames after one warm-up
    python benchmarks/refiner.py --frames 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAVIS = ROOT / "tests" / "fixtures" / "davis-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from dinomask import Reference, Segmenter, load_backbone
    from dinomask.backbones import random_backbone_dir
    from dinomask.preprocess import load_image, load_mask, patch_coverage
    from dinomask.refine import RefineSettings, SamRefiner, prompts_from_score, random_refiner_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    frames = sorted((DAVIS / "JPEGImages/480p/dog").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as work:
        backbone = load_backbone(str(random_backbone_dir(Path(work) / "vits14reg", arch="dinov2_vits14_reg")))
        refiner = SamRefiner.load(random_refiner_dir(Path(work) / "sam-vit-base", "sam-vit-base"), device="cpu")
        parameters = sum(p.numel() for p in refiner.model.parameters())
        reference = Reference.from_images(backbone, [load_image(frames[0])],
                                          [load_mask(DAVIS / "Annotations/480p/dog/00000.png")])
        plain = Segmenter(backbone, reference)
        paths = frames[1:]
        images = [load_image(p) for p in paths]
        truths = [load_mask(DAVIS / "Annotations/480p/dog" / (p.stem + ".png")) for p in paths]
        grid = plain.config.geometry.grid(480, 854, backbone.spec.patch_size)
        settings = RefineSettings(mode="sam")
        # prompts from the ground truth on the default grid (the oracle): random weights may leave
        # no patch above 0, and then the refiner would not run at all
        prompts = [prompts_from_score(patch_coverage(t, grid) - 0.5, t.shape, settings) for t in truths]
        plain.predict(images[0]), refiner.refine(images[0], [prompts[0]])  # warm-up
        rows = {"segmenter (default preset)": [], "refiner: image encoder": [], "refiner: prompt decoder": [],
                "refiner: whole step": []}
        for index in [i % len(images) for i in range(args.frames)]:
            start = time.perf_counter()
            plain.predict(images[index])
            rows["segmenter (default preset)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            refiner.refine(images[index], [prompts[index]])
            rows["refiner: whole step"].append(time.perf_counter() - start)
            rows["refiner: image encoder"].append(refiner.last_timings["encoder"])
            rows["refiner: prompt decoder"].append(refiner.last_timings["decoder"])
    print(f"SAM ViT-B true shape ({parameters / 1e6:.0f} M parameters, random weights), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, backbone {backbone.spec.name} "
          f"({type(backbone).__name__}), frame 854x480, {args.frames} frames after one warm-up")
    print("| stage | median ms/frame | min | max |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        ms = [1000 * v for v in values]
        print(f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")
    segment = statistics.median(rows["segmenter (default preset)"])
    ratio = (segment + statistics.median(rows["refiner: whole step"])) / segment
    print(f"refinement multiplies the time per frame by {ratio:.1f}")


if __name__ == "__main__":
    main()
