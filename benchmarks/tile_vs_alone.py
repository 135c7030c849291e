"""Each object of the side-by-side pairs against the same clip alone (issue 30's goal: within 0.05
live J), from two ``dinomask eval live`` outputs:

    python benchmarks/scenarios.py tile  -d SET ... -o scenarios/tile
    python benchmarks/scenarios.py alone -d SET ... -o scenarios/alone   # each clip as long as its pair
    dinomask eval live --oracle --costs 262,22 -d scenarios/tile  -o eval-tile  ...
    dinomask eval live --oracle --costs 262,22 -d scenarios/alone -o eval-alone ...
    python benchmarks/tile_vs_alone.py eval-tile eval-alone [--within 0.05]

A pair is as long as its shorter clip, so the longer clip is compared with its own first frames
(``NAME@LENGTH``), not with the whole clip: on a clip that gets harder later (mallard-fly) the whole
clip would read 0.15 lower than the frames the pair shows. Prints a row per object (alone, beside the
other, the difference) and how many are within the margin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from live_sets_chart import read_summary  # beside this script: one reader of eval live's metrics.json


def compare(tile: dict[str, dict], alone: dict[str, dict], lengths: dict[str, int] | None = None) -> list[dict]:
    """One row per object of each pair: ``pair``, ``object``, ``alone`` and ``beside`` live J and their
    ``difference``. ``tile`` and ``alone`` are eval live's ``sequences``; a pair ``A+B`` of length ``L``
    (its ``frames``, or ``lengths[pair]``) reads ``A@L`` and ``B@L`` from ``alone``."""
    rows = []
    for pair, figures in tile.items():
        length = (lengths or {}).get(pair) or figures.get("frames")
        for number, name in enumerate(pair.split("+"), start=1):
            key = f"{name}@{length}"
            if key not in alone:
                raise SystemExit(f"no {key} among the clips alone ({', '.join(sorted(alone)) or 'none'}): build them "
                                 f"with benchmarks/scenarios.py alone from the same sets as the pairs")
            beside = figures["objects"][str(number)]["live_j"]
            single = alone[key]["live_j"]
            rows.append({"pair": pair, "object": name, "alone": single, "beside": beside,
                         "difference": beside - single})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tile", type=Path, help="eval live's output folder for the pairs")
    parser.add_argument("alone", type=Path, help="eval live's output folder for the clips alone")
    parser.add_argument("--within", type=float, default=0.05, help="the margin (default 0.05 live J)")
    parser.add_argument("--schedule", default="async")
    args = parser.parse_args(argv)
    rows = compare(read_summary(args.tile, args.schedule)["sequences"],
                   read_summary(args.alone, args.schedule)["sequences"])
    print(f"{'pair':30s} {'object':16s} {'alone':>6s} {'beside':>6s} {'diff':>7s}")
    for row in rows:
        flag = "" if row["difference"] >= -args.within else "  <- outside"
        print(f"{row['pair']:30s} {row['object']:16s} {row['alone']:6.3f} {row['beside']:6.3f} {row['difference']:+7.3f}{flag}")
    inside = sum(row["difference"] >= -args.within for row in rows)
    mean = sum(row["difference"] for row in rows) / len(rows) if rows else float("nan")
    print(f"{inside} of {len(rows)} objects within {args.within} of the same frames alone; mean difference {mean:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
