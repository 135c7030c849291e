"""Which device and compute dtype a torch backbone runs on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def resolve_device(device: str) -> "torch.device":
    """``auto`` -> cuda if available else cpu; ``cpu``/``cuda``/``cuda:N`` as given."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_dtype(dtype: str, device: "torch.device") -> "torch.dtype":
    """``auto`` -> fp16 on CUDA, bf16 on CPUs with native bf16, else fp32.

    ``float32``, ``bfloat16`` and ``float16`` are taken as given.
    """
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    if dtype not in table:
        raise ValueError(f"dtype must be one of auto, {', '.join(table)}; got {dtype!r}")
    if device.type == "cpu" and dtype == "float16":
        raise ValueError("float16 is not supported on CPU; use bfloat16 or float32")
    return table[dtype]
