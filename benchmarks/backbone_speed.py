"""Backbone speed: plain fp32 eager against dinomask's fast path, side by side in one run.

Prints ms per frame, frames per second, peak memory (max RSS of a fresh process per
row), the speed-up over the plain baseline, and efficiency: the model's FLOPs divided by
time, against fp32 and bf16 matmul peaks measured in the same run.

Random weights with the real architecture (transformers' Dinov2Model): speed does not
depend on the weights. Not a test: it asserts nothing.

    python benchmarks/backbone_speed.py                      # ViT-S and ViT-B at 224, 448, 518
    python benchmarks/backbone_speed.py --models s --sizes 518 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
         "b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)}
PATHS = ["torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"]


def vit_flops(size: str, pixels: int, patch: int = 14) -> float:
    """Multiply-adds x 2 of one forward pass: per block 24 N C^2 (projections, MLP) + 4 N^2 C (attention)."""
    c, layers = SIZES[size]["hidden_size"], SIZES[size]["num_hidden_layers"]
    n = (pixels // patch) ** 2 + 1
    embed = 2 * (pixels // patch) ** 2 * (3 * patch * patch) * c
    return embed + layers * (24 * n * c * c + 4 * n * n * c)


def matmul_peak(dtype_name: str, n: int = 2048, repeats: int = 10) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def model_dir(size: str, root: Path) -> Path:
    """Random weights in the released shape (``random-model --arch``), with registers as the default backbone."""
    from dinomask.backbones import random_backbone_dir

    path = root / f"vit{size}14_reg"
    if not (path / "config.json").exists():
        random_backbone_dir(path, arch=f"dinov2_vit{size}14_reg")
    return path


def run_one(model: str, path: str, pixels: int, repeats: int) -> dict:
    """One row, in this (fresh) process: load, warm up, time, report max RSS."""
    import resource

    import torch

    from dinomask.backbones import load_backbone

    runtime, dtype = {"torch-fp32": ("torch", "float32"), "torch-bf16": ("torch", "bfloat16"),
                      "onnx-fp32": ("onnx", "float32"), "onnx-int8": ("onnx-int8", "float32")}[path]
    backbone = load_backbone(model, device="cpu", dtype=dtype, runtime=runtime)
    x = torch.randn(1, 3, pixels, pixels)
    for _ in range(2):
        backbone(x)
    start = time.perf_counter()
    for _ in range(repeats):
        backbone(x)
    seconds = (time.perf_counter() - start) / max(repeats, 1)
    return {"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "fidelity": getattr(backbone, "fidelity", None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["s", "b"], choices=list(SIZES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 448, 518])
    parser.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "PATH", "PIXELS", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), int(args.one[3]))))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    work = Path(tempfile.mkdtemp(prefix="dinomask-bench-"))
    os.environ.setdefault("DINOMASK_CACHE", str(work / "cache"))
    peak32, peak16 = matmul_peak("float32"), matmul_peak("bfloat16")
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"# matmul 2048^3: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s (this run)")
    header = f"{'model':6s} {'px':>4s} {'path':11s} {'ms/frame':>9s} {'FPS':>6s} {'x plain':>8s} {'GFLOP/s':>8s} {'%bf16pk':>8s} {'peak MiB':>9s} {'cos min':>8s}"
    print(header)
    print("-" * len(header))
    for size in args.models:
        directory = str(model_dir(size, work))
        for path in args.paths:  # export once, outside the timed processes, so peak memory is the run's own
            subprocess.run([sys.executable, __file__, "--one", directory, path, "224", "0"], capture_output=True,
                           env=os.environ.copy())
        for pixels in args.sizes:
            baseline = None
            flops = vit_flops(size, pixels)
            for path in args.paths:
                out = subprocess.run([sys.executable, __file__, "--one", directory, path, str(pixels), str(args.repeats)],
                                     capture_output=True, text=True, env=os.environ.copy())
                if out.returncode != 0:
                    print(f"ViT-{size.upper()}/14 {pixels:4d} {path:11s} failed: {out.stderr.strip().splitlines()[-1]}")
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                seconds = row["seconds"]
                baseline = baseline or (seconds if path == "torch-fp32" else None)
                speedup = f"{baseline / seconds:7.2f}x" if baseline else "    n/a"
                rate = flops / seconds
                fidelity = f"{row['fidelity']:.4f}" if row["fidelity"] is not None else "   exact" if path == "torch-fp32" else "     -"
                print(f"ViT-{size.upper()} {pixels:4d} {path:11s} {seconds * 1e3:9.1f} {1 / seconds:6.2f} {speedup:>8s} "
                      f"{rate / 1e9:8.0f} {100 * rate / peak16:7.0f}% {row['peak_rss_mib']:9.0f} {fidelity:>8s}")
    print("# GFLOP/s = analytic model FLOPs / time; %bf16pk = that over the bf16 matmul peak measured above.")
    print("# cos min = lowest per-patch cosine to fp32 torch features on dinomask's test image (checked at export).")


if __name__ == "__main__":
    main()
