"""Does ``dinomask live`` hold steady for hours? A long frames folder played as a 24 FPS camera
through the command users run, its RSS and latency recorded as it goes (issue 30).

    python benchmarks/scenarios.py long -d ../shared/data/davis-live -o /tmp/long --n 10000
    python benchmarks/live_long.py /tmp/long/JPEGImages/480p/dog-long10000 -o live-long

Runs ``dinomask live --source FOLDER --realtime --no-window --stats-every 20`` with the true
ViT-S/14-reg shape at random weights and the default runtime; samples the process's RSS every
2 s; writes ``live_long.csv`` (time, RSS, and each stats line's shown FPS and p95) and
``live_long.png`` (both curves), and prints the first and last minutes side by side with the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("live-long"))
    parser.add_argument("--stats-every", type=float, default=20.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from objects_cost import _machine

    from dinomask.backbones import random_backbone_dir

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        model = random_backbone_dir(Path(work) / "model", arch="dinov2_vits14_reg")
        ref = Path(work) / "ref.npz"
        frames = sorted(args.folder.glob("*.jpg"))
        masks = args.folder.parent.parent.parent / "Annotations" / "480p" / args.folder.name
        subprocess.run([sys.executable, "-m", "dinomask", "reference", str(frames[0]), "--mask",
                        str(masks / f"{frames[0].stem}.png"), "--model", str(model), "-o", str(ref)], check=True,
                       capture_output=True)
        command = [sys.executable, "-m", "dinomask", "live", "-r", str(ref), "--source", str(args.folder), "--realtime",
                   "--no-window", "--stats-every", str(args.stats_every), "--model", str(model)]
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   text=True)
        samples: list[tuple[float, float]] = []

        def sample() -> None:
            while process.poll() is None:
                rss = _rss_mib(process.pid)
                if rss is not None:
                    samples.append((time.monotonic() - started, rss))
                time.sleep(2.0)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        stats = [json.loads(line) for line in process.stdout if line.startswith("{")]
        process.wait()
        thread.join()
        summary = process.stderr.read().strip().splitlines()[-2:]
    lines = ["t_s,rss_mib,shown_fps,p95_ms"]
    lines += [f"{t:.1f},{r:.1f},," for t, r in samples]
    lines += [f"{s['t']:.1f},,{s['fps']},{s['latency_ms_p95']}" for s in stats]
    (args.out / "live_long.csv").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot([t / 60 for t, _ in samples], [r for _, r in samples])
    top.set_ylabel("RSS (MiB)")
    bottom.plot([s["t"] / 60 for s in stats], [s["latency_ms_p95"] for s in stats], marker=".", label="p95 latency (ms)")
    bottom.plot([s["t"] / 60 for s in stats], [s["fps"] for s in stats], marker=".", label="shown FPS")
    bottom.set_xlabel("minutes")
    bottom.legend()
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle(f"dinomask live on {len(frames)} frames ({args.folder.name}) at 24 FPS\n"
                 f"ViT-S/14-reg shape, RANDOM weights (speed and memory only); {_machine()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "live_long.png", dpi=100)
    warm = [r for t, r in samples if t > 60]
    print(_machine())
    print(f"{len(frames)} frames; RSS after the first minute {warm[0] if warm else float('nan'):.0f} MiB, "
          f"at the end {samples[-1][1] if samples else float('nan'):.0f} MiB, peak {max(r for _, r in samples):.0f} MiB")
    if len(stats) >= 4:
        first, last = stats[1], stats[-2]
        print(f"second interval: {first['fps']} FPS, p95 {first['latency_ms_p95']} ms; "
              f"last whole interval: {last['fps']} FPS, p95 {last['latency_ms_p95']} ms")
    print("\n".join(summary))
    return process.returncode


if __name__ == "__main__":
    raise SystemExit(main())
