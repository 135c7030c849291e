"""Build come-and-go scenario sets (issue 30) from DAVIS-layout sets, for ``dinomask eval live``.

    python benchmarks/scenarios.py cut  -d ../shared/data/davis-live -d ../shared/data/davis-motion \\
        -d ../shared/data/davis-train6 -o scenarios/cut24 --k 24
    python benchmarks/scenarios.py pan  -d ... -o scenarios/pan --zoom 2
    python benchmarks/scenarios.py pan  -d ... -o scenarios/pan3-slow --zoom 3 --speed 0.67 --hold 8
    python benchmarks/scenarios.py tile -d ... -o scenarios/tile
    python benchmarks/scenarios.py long -d ../shared/data/davis-live -o scenarios/long --n 10000

then ``dinomask eval live --oracle --costs 262,22 -d scenarios/cut24 -o eval-cut24``.
See :mod:`dinomask.evaluate.scenarios` for what each scenario is.
"""

from __future__ import annotations

import argparse
import sys

from dinomask.evaluate.scenarios import SCENARIOS, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=SCENARIOS)
    parser.add_argument("-d", "--dataset", action="append", required=True, help="a DAVIS-layout set (repeat)")
    parser.add_argument("-o", "--output", required=True, help="the scenario set to write (a new folder)")
    parser.add_argument("--k", type=int, default=24, help="cut: frames of the other clip spliced in")
    parser.add_argument("--zoom", type=float, default=2.0, help="pan: the virtual camera's zoom")
    parser.add_argument("--hold", type=int, default=12, help="pan: frames held with the object out of view")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="pan: the pan's speed against the default (off the object over an eighth of the clip)")
    parser.add_argument("--n", type=int, default=10_000, help="long: frames of the played clip")
    parser.add_argument("--pairs", type=int, default=None, help="tile: at most this many side-by-side pairs")
    args = parser.parse_args(argv)
    written = build(args.kind, args.dataset, args.output, k=args.k, zoom=args.zoom, hold=args.hold, speed=args.speed, n=args.n,
                    pairs=args.pairs)
    for path in written:
        print(path)
    print(f"{len(written)} {args.kind} sequences in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
