"""What a camera user gets: ``dinomask eval live --oracle`` (realtime, wall clock) on the
davis-live clips (dog, car-shadow: slow) and the davis-motion clips (breakdance, motocross-jump,
parkour: fast, articulated), every frame at 24 FPS, at 854x480 and replayed at 640x480 and
1280x720, with the true ViT-S/14-reg shape at random weights and the default runtime, for
``auto`` and ``async`` in one run. Each size and set runs in a fresh process, so its peak RSS is
its own.

The oracle (ground truth on the grid as the patch classifier) makes each figure the best the
schedule can give; the backbone still runs, so the costs are this machine's.

    python benchmarks/live_camera.py                   # needs ../shared/data/davis-live and davis-motion
    python benchmarks/live_camera.py --sizes 854x480 --sets motion,train6
    python benchmarks/live_camera.py --sizes 854x480 --load hog       # a busy loop on one of the cores beside it
    python benchmarks/live_camera.py --sizes 854x480 --load one-core  # the whole run on one core (taskset)

Every table starts with the machine (CPU model, cores, AVX-512 / VNNI / AVX2) and the load.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def resized_dataset(root: Path, size: tuple[int, int], out: Path) -> Path:
    """A DAVIS-layout set at ``size`` (w, h): frames by area/bicubic, masks by nearest."""
    if size == (854, 480):
        return root
    for kind, resample in (("JPEGImages", Image.BICUBIC), ("Annotations", Image.NEAREST)):
        for source in sorted((root / kind / "480p").glob("*/*")):
            target = out / kind / "480p" / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            resized = Image.open(source).resize(size, resample)
            if kind == "JPEGImages":
                resized.save(target, quality=95)
            else:
                Image.fromarray((np.asarray(resized) > 0).astype(np.uint8) * 255).save(target)
    return out


#: ``--load``: how the machine is loaded while a set runs.
LOADS = ("quiet", "hog", "one-core")


def _pinned(command: list[str], cores: str) -> list[str]:
    """``command`` under ``taskset -c cores`` (Linux's util-linux)."""
    if shutil.which("taskset") is None:
        raise SystemExit("--load needs taskset (util-linux) to pin processes to cores")
    return ["taskset", "-c", cores, *command]


def run_under_load(command: list[str], load: str, **kwargs) -> subprocess.CompletedProcess:
    """``command`` run to its end under ``load`` (:data:`LOADS`): as it is, beside a busy loop
    pinned to core 0 (another program on a laptop), or pinned to core 0 itself."""
    if load == "one-core":
        command = _pinned(command, "0")
    hog = subprocess.Popen(_pinned([sys.executable, "-c", "while 1: pass"], "0")) if load == "hog" else None
    try:
        return subprocess.run(command, capture_output=True, text=True, **kwargs)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def run_size(root: Path, size: tuple[int, int], model: Path, work: Path, schedules: list[str], runtime: str,
             load: str = "quiet") -> dict:
    data = resized_dataset(root, size, work / f"data-{root.name}-{size[0]}x{size[1]}")
    out = work / f"out-{root.name}-{size[0]}x{size[1]}"
    command = [sys.executable, "-m", "dinomask.cli", "eval", "live", "-d", str(data), "--model", str(model), "-o", str(out),
               "--oracle", "--runtime", runtime, "-q"] + [a for s in schedules for a in ("--keyframes", s)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = run_under_load(command, load)
    if done.returncode != 0:
        raise SystemExit(f"eval live failed at {size}:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    metrics = json.loads((out / "metrics.json").read_text())
    return {"set": root.name, "size": f"{size[0]}x{size[1]}", "peak_rss_mib": max(peak, before) / 1024,
            "schedules": {name: {k: v for k, v in figures.items() if k != "sequences"}
                          for name, figures in metrics["schedules"].items()},
            "sequences": {name: {seq: {k: v for k, v in f.items() if k != "curves"} for seq, f in figures["sequences"].items()}
                          for name, figures in metrics["schedules"].items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="640x480,854x480,1280x720")
    parser.add_argument("--arch", default="dinov2_vits14_reg")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--schedules", default="async,auto")
    parser.add_argument("--sets", default="live,motion", help="any of live, motion, train6 (davis-*)")
    parser.add_argument("--load", default="quiet", choices=LOADS,
                        help="quiet; hog: a busy loop pinned to core 0 beside the run; one-core: the run pinned to core 0")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    roots = [DATA / f"davis-{name}" for name in args.sets.split(",")]
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"needs {root} (the clips beside the repository)")
    from dinomask.backbones import random_backbone_dir

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dinomask-live-camera-") as tmp:
        work = Path(tmp)
        model = random_backbone_dir(work / "model", arch=args.arch)
        for root in roots:
            for size in sizes:
                rows.append(run_size(root, size, model, work, args.schedules.split(","), args.runtime, args.load))
                shutil.rmtree(work / f"data-{root.name}-{size[0]}x{size[1]}", ignore_errors=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import describe

    print(f"machine: {describe()}; load: {args.load}")
    print(f"eval live --oracle, realtime 24 FPS, {args.arch} random weights, runtime {args.runtime}, this machine's wall clock")
    print("| clips | frames | schedule | shown FPS | latency p50 / p95 (ms) | own-frame J | live J | one frame late "
          "| keyframes | key scale max (px) | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def show(value, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    for row in rows:
        for name, d in row["schedules"].items():
            print(f"| {row['set']} | {row['size']} | {name} | {show(d['shown_fps'], '.1f')} | "
                  f"{show(d['latency_ms_p50'], '.0f')} / {show(d['latency_ms_p95'], '.0f')} | {show(d['own_frame_j'], '.3f')} | "
                  f"{show(d['live_j'], '.3f')} | {show(d['late_by_one_j'], '.3f')} | {show(d['keyframe_share'], '.0%')} | "
                  f"{show(d['key_scale_px_max'], '.0f')} | {row['peak_rss_mib']:.0f} MiB |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
