"""Peak RSS of ``dinomask eval masks`` with few and with all frames: memory must not grow with
the dataset (the feature cache keeps one frame).

Random weights in ViT-S/14-reg's true shape (384 wide, 12 blocks, 6 heads, MLP ratio 4), the
default settings table, on davis-mini (tests/fixtures, or ``--dataset``)::

    python benchmarks/eval_memory.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: Runs the CLI and writes its own peak RSS (KiB, ru_maxrss) to the file named by $PEAK_FILE.
RUN = ("import os, resource, sys\nfrom dinomask.cli import main\ncode = main(sys.argv[1:])\n"
       "open(os.environ['PEAK_FILE'], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
       "sys.exit(code)")


def peak_mib(args: list[str], env: dict, work: Path) -> float:
    """Run the CLI in a fresh process and return its peak RSS (MiB)."""
    peak = work / "peak.txt"
    subprocess.run([sys.executable, "-c", RUN, *args], check=True, env={**env, "PEAK_FILE": str(peak)})
    return int(peak.read_text()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=ROOT / "tests/fixtures/davis-mini")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dinomask-eval-mem-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DINOMASK_CACHE": str(work / "cache")}
    from dinomask.backbones import random_backbone_dir

    model = random_backbone_dir(work / "vits14_reg", arch="dinov2_vits14_reg")
    common = ["eval", "masks", "-d", str(args.dataset), "--model", str(model), "-q", "--allow-missing"]
    peak_mib([*common, "-o", str(work / "warm"), "--max-frames", "1", "--setting", "quick"], env, work)  # ONNX export
    few = peak_mib([*common, "-o", str(work / "few"), "--max-frames", "2"], env, work)
    import json

    scored_few = json.loads((work / "few/metrics.json").read_text())["dataset_mean"]["dinomask"]["frames"]
    every = peak_mib([*common, "-o", str(work / "all")], env, work)
    scored_all = json.loads((work / "all/metrics.json").read_text())["dataset_mean"]["dinomask"]["frames"]
    print(f"eval masks, default settings table, ViT-S/14-reg true shape: peak RSS {few:.0f} MiB with "
          f"{scored_few} scored frames (--max-frames 2), {every:.0f} MiB with all {scored_all} "
          f"(+{every - few:.0f} MiB for {scored_all - scored_few} more frames)")


if __name__ == "__main__":
    main()
