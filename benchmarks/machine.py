"""The machine a benchmark ran on, in one line: CPU model, cores, and the vector instructions that
decide ONNX Runtime's and OpenCV's speed (AVX-512, VNNI, AVX2). Every table printed by a benchmark
carries it, because a figure from one machine is not another's (issue 33)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """``CPU model, N cores (M usable), AVX-512, VNNI, AVX2``."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and model in ("", platform.processor(), platform.machine()):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    isa = ", ".join(name for name, flag in (("AVX-512", "avx512f"), ("VNNI", "avx512_vnni"), ("AVX2", "avx2"))
                    if flag in flags) or "no AVX2"
    return f"{model}, {os.cpu_count()} cores ({usable} usable here), {isa}"


if __name__ == "__main__":
    print(describe())
