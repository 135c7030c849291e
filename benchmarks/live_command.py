"""What ``dinomask live`` itself shows (issue 33 item 1): every clip of the chosen DAVIS sets,
played as a 24 FPS camera (``--realtime``) through the command users run, end to end (capture,
flow, keys, compositing, drawing, and with ``-o`` the recording), with the true ViT-S/14-reg
shape at random weights and the default runtime. Each clip runs in a fresh process, with and
without ``-o``, on the machine as it is (``--load quiet``), beside a busy core (``hog``) or on
one core (``one-core``).

For each run: frames the camera delivered, frames shown, dropped (delivered, never shown),
shown FPS, capture-to-output latency p50/p95 (the command's own ``--stats-every 0`` line), the
stage times from its summary line, and the share of frames the backbone ran on. The reference
is the clip's first frame and its ground-truth mask (``dinomask reference --mask``); quality is
not scored here (the weights are random): ``benchmarks/live_camera.py`` gives live J on the
simulated and the wall clock.

    python benchmarks/live_command.py                           # davis-live and davis-motion, quiet
    python benchmarks/live_command.py --sets live,motion,train6 --load hog
    python benchmarks/live_command.py --outputs none            # without -o only

Every table starts with the machine (CPU model, cores, AVX-512 / VNNI / AVX2) and the load.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_camera import DATA, LOADS, run_under_load  # noqa: E402

SUMMARY = re.compile(r"(?P<processed>\d+) frames processed in (?P<seconds>[\d.]+) s \((?P<fps>[\d.]+) FPS\); "
                     r"(?P<dropped>\d+) dropped; reconnects \d+; (?P<stages>.*)")
KEYS = re.compile(r"backbone ran on (?P<share>\d+)% of frames")


def parse_run(stdout: str, stderr: str, delivered: int) -> dict:
    """The figures of one ``live --stats-every 0`` run from what it printed (stdout: the JSON
    line and the summary; ``stderr``: warnings, kept for the error message)."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    final = next((line for line in lines if line.get("final")), None)
    summary = SUMMARY.search(stdout)
    keys = KEYS.search(stdout)
    if final is None or summary is None or keys is None:
        raise ValueError(f"live printed no statistics:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    stages = {name: float(value) for name, value in re.findall(r"(\w+) ([\d.]+) ms", summary["stages"])}
    shown = int(summary["processed"])
    return {"delivered": delivered, "shown": shown, "dropped": delivered - shown,
            "dropped_share": (delivered - shown) / delivered if delivered else None,
            "fps": float(summary["fps"]), "latency_ms_p50": final["latency_ms_p50"],
            "latency_ms_p95": final["latency_ms_p95"], "keys": int(keys["share"]) / 100,
            "flow_side": final.get("flow_side"), "behind": final.get("behind"), "stage_ms": stages}


def run_clip(frames: Path, mask: Path, model: Path, work: Path, output: bool, load: str) -> dict:
    """One clip (a folder of ``*.jpg``) through ``dinomask live`` as a 24 FPS camera, the reference
    made from its first frame and ``mask`` (once, in ``work``): :func:`parse_run`'s figures."""
    name = frames.name
    reference = work / f"{name}.npz"
    if not reference.exists():
        subprocess.run([sys.executable, "-m", "dinomask.cli", "reference", str(sorted(frames.glob("*.jpg"))[0]),
                        "--mask", str(mask), "--model", str(model), "-o", str(reference)],
                       check=True, capture_output=True)
    command = [sys.executable, "-m", "dinomask.cli", "live", "--ref", str(reference), "--source", str(frames),
               "--realtime", "--fps", "24", "--no-window", "--stats-every", "0", "--model", str(model)]
    if output:
        command += ["-o", str(work / f"{name}.mp4"), "--overwrite"]
    done = run_under_load(command, load, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"live failed on {frames}:\n{done.stderr[-3000:]}")
    return {"clip": name, "output": output, **parse_run(done.stdout, done.stderr, len(list(frames.glob("*.jpg"))))}


def totals(rows: list[dict]) -> dict:
    """Summed frames, frame-weighted FPS, the worst p95 and the mean of the stage times."""
    delivered = sum(r["delivered"] for r in rows)
    shown = sum(r["shown"] for r in rows)
    stages = sorted({k for r in rows for k in r["stage_ms"]})
    return {"delivered": delivered, "shown": shown, "dropped_share": (delivered - shown) / delivered,
            "fps": sum(r["fps"] * r["shown"] for r in rows) / shown,
            "latency_ms_p95_max": max(r["latency_ms_p95"] for r in rows),
            "latency_ms_p95_mean": sum(r["latency_ms_p95"] for r in rows) / len(rows),
            "keys": sum(r["keys"] * r["shown"] for r in rows) / shown,
            "stage_ms": {k: sum(r["stage_ms"].get(k, 0.0) for r in rows) / len(rows) for k in stages}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="dinov2_vits14_reg")
    parser.add_argument("--sets", default="live,motion", help="any of live, motion, train6 (davis-*)")
    parser.add_argument("--outputs", default="none,mp4", help="none (no -o), mp4 (-o clip.mp4), or both")
    parser.add_argument("--load", default="quiet", choices=LOADS)
    parser.add_argument("--model", type=Path, default=None, help="a model folder (default: a random one of --arch)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    roots = [DATA / f"davis-{name}" for name in args.sets.split(",")]
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"needs {root} (the clips beside the repository)")
    from dinomask.backbones import random_backbone_dir
    from machine import describe

    outputs = [o == "mp4" for o in args.outputs.split(",")]
    groups: dict[tuple[str, bool], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="dinomask-live-command-") as tmp:
        work = Path(tmp)
        model = args.model or random_backbone_dir(work / "model", arch=args.arch)
        for root in roots:
            for frames in sorted(p for p in (root / "JPEGImages" / "480p").iterdir() if p.is_dir()):
                mask = sorted((root / "Annotations" / "480p" / frames.name).glob("*.png"))[0]
                for output in outputs:
                    row = run_clip(frames, mask, model, work, output, args.load)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    groups.setdefault((root.name, output), []).append(row)
    print(f"machine: {describe()}; load: {args.load}")
    print(f"dinomask live --realtime --fps 24 --no-window, 854x480 frame folders, {args.arch} random weights, "
          "default runtime, this machine's wall clock")
    print("| clips | -o | delivered | shown | dropped | shown FPS | p95 mean / max (ms) | keys | flow / output / key (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, output), rows in groups.items():
        t = totals(rows)
        s = t["stage_ms"]
        print(f"| {name} | {'mp4' if output else '–'} | {t['delivered']} | {t['shown']} | {t['dropped_share']:.1%} | "
              f"{t['fps']:.1f} | {t['latency_ms_p95_mean']:.0f} / {t['latency_ms_p95_max']:.0f} | {t['keys']:.0%} | "
              f"{s.get('flow', 0):.1f} / {s.get('output', 0):.1f} / {s.get('key', 0):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]}{' -o' if k[1] else ''}": v for k, v in groups.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
