"""The live figures of several sets side by side, in one picture (issue 30): the plain clips and the
come-and-go scenarios, each read from the ``metrics.json`` that ``dinomask eval live`` wrote.

    python benchmarks/live_sets_chart.py --run davis-live=OUT/live --run cut24=OUT/cut24 ... \\
        -o docs/live-sets.png --caption "oracle, --costs 262,22, 2-core build machine"

Three panels, one group of bars per set:

1. live J (what was on screen, scored at each camera instant) and present live J (the same over the
   frames where the object is in view; the same as live J for a set where it never leaves);
2. the share of absent frames on which a mask was shown (``absent_fp_rate``), with the goal (5%);
3. frames to find the object again after it returns (``reacquire_frames_mean``, the bar, and
   ``_max``, the dot), with the goals (3 and 8); a cross where a return was never found.

In panels 2 and 3 a black tick marks the ceiling: the ground truth shown one frame late
(``late_by_one_*``), the best a screen one frame behind the camera can read.

A set with no absent frame has no bar in panels 2 and 3 ("none absent" is written there): no
number is not zero. The schedule is ``async`` unless ``--schedule`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GOALS = {"absent_fp_rate": 0.05, "reacquire_frames_mean": 3, "reacquire_frames_max": 8}
#: the fields of an eval live summary the chart reads (all in dinomask.evaluate.live_scores.LIVE_METRICS)
FIELDS = ("live_j", "present_live_j", "absent_frames", "absent_fp_rate", "reacquire_frames_mean",
          "reacquire_frames_max", "reacquire_missed", "late_by_one_absent_fp_rate",
          "late_by_one_reacquire_frames_mean")


def read_summary(folder: str | Path, schedule: str) -> dict:
    """One schedule's summary (its ``sequences`` per clip among them) from the ``metrics.json`` that
    ``dinomask eval live -o FOLDER`` wrote; a missing file or schedule stops with what to do."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no metrics.json (run dinomask eval live -o {folder} first)")
    schedules = json.loads(path.read_text())["schedules"]
    if schedule not in schedules:
        raise SystemExit(f"{path}: no schedule {schedule!r} (it has {', '.join(schedules)})")
    return schedules[schedule]


def read_runs(runs: list[str], schedule: str) -> dict[str, dict]:
    """``NAME=DIR`` pairs -> ``{NAME: that schedule's summary in DIR/metrics.json}``."""
    summaries = {}
    for run in runs:
        name, sep, folder = run.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--run takes NAME=DIR (an eval live output folder), got {run!r}")
        summaries[name] = read_summary(folder, schedule)
    return summaries


def draw(summaries: dict[str, dict], path: Path, caption: str = "") -> Path:
    """Write the three panels (see the module's docstring) for ``summaries`` to ``path`` (PNG)."""
    import textwrap

    import numpy as np

    from dinomask.plots import _pyplot, _save  # the project's figure setup and caption, as its reports use

    plt = _pyplot()

    names = list(summaries)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(4.2 + 1.1 * len(names), 3.6), gridspec_kw={"width_ratios": [1.4, 1, 1]})
    jays, present = axes[0], axes[1:]

    live = [summaries[n]["live_j"] for n in names]
    shown = [summaries[n].get("present_live_j") or summaries[n]["live_j"] for n in names]
    jays.bar(x - 0.2, live, 0.4, label="live J", color="#4c72b0")
    jays.bar(x + 0.2, shown, 0.4, label="live J while present", color="#8fb0de")
    for i, (a, b) in enumerate(zip(live, shown)):
        jays.text(i - 0.2, a + 0.01, f"{a:.2f}", ha="center", fontsize=6.5)
        jays.text(i + 0.2, b + 0.01, f"{b:.2f}", ha="center", fontsize=6.5)
    jays.set_ylim(0, 1.15)
    jays.set_yticks(np.linspace(0, 1, 6))
    jays.set_title("mask quality on screen (higher is better)", fontsize=9)
    jays.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)

    fp_axis, back_axis = present
    for i, name in enumerate(names):
        summary = summaries[name]
        if not summary.get("absent_frames"):
            for axis in present:
                axis.text(i, 0.02, "none\nabsent", ha="center", va="bottom", fontsize=6.5, color="0.45",
                          transform=axis.get_xaxis_transform())
            continue
        rate = summary["absent_fp_rate"]
        fp_axis.bar(i, 100 * rate, 0.6, color="#c44e52" if rate > GOALS["absent_fp_rate"] else "#55a868")
        fp_axis.text(i, 100 * rate + 0.5, f"{100 * rate:.1f}%", ha="center", fontsize=6.5)
        ceiling = summary.get("late_by_one_absent_fp_rate")
        if ceiling is not None:
            fp_axis.plot([i], [100 * ceiling], "_", color="k", markersize=16, markeredgewidth=2)
        mean, worst, missed = (summary.get(k) for k in
                               ("reacquire_frames_mean", "reacquire_frames_max", "reacquire_missed"))
        if mean is not None:
            back_axis.bar(i, mean, 0.6, color="#c44e52" if mean > GOALS["reacquire_frames_mean"] else "#55a868")
            back_axis.plot([i], [worst], "o", color="0.2", markersize=4)
            back_axis.text(i, worst + 0.4, f"{mean:.1f} / {worst:g}", ha="center", fontsize=6.5)
        ceiling = summary.get("late_by_one_reacquire_frames_mean")
        if ceiling is not None:
            back_axis.plot([i], [ceiling], "_", color="k", markersize=16, markeredgewidth=2)
        if missed:  # above the label, clear of the bars
            top = worst if worst is not None else 0
            back_axis.plot([i], [top + 1.6], "x", color="#c44e52", markersize=6)
            back_axis.text(i, top + 2.1, f"{missed} missed", ha="center", fontsize=6.5, color="#c44e52")
    fp_axis.axhline(100 * GOALS["absent_fp_rate"], color="0.3", linestyle="--", linewidth=0.8)
    fp_axis.set_title("mask shown while the object is gone\n(% of absent frames; goal <= 5%; tick: ceiling)", fontsize=9)
    fp_axis.set_ylim(bottom=0)
    for goal in ("reacquire_frames_mean", "reacquire_frames_max"):
        back_axis.axhline(GOALS[goal], color="0.3", linestyle="--" if goal.endswith("mean") else ":", linewidth=0.8)
    back_axis.set_title("frames to find it again after a return\n(bar: mean, dot: max, tick: ceiling; goals 3, 8)", fontsize=9)
    back_axis.set_ylim(bottom=0)
    back_axis.set_ylim(top=back_axis.get_ylim()[1] + 1)  # room for the labels above the highest dot
    for axis in axes:
        axis.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, "\n".join(textwrap.wrap(caption, 150)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR",
                        help="a set's name on the chart and the eval live output folder it was scored in")
    parser.add_argument("--schedule", default="async", help="which schedule of each metrics.json (default async)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--caption", default="", help="what the figures are: data, command, machine")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.overwrite:
        raise SystemExit(f"{args.output} exists; pass --overwrite to replace it")
    path = draw(read_runs(args.run, args.schedule), args.output, args.caption)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
