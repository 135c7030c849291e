"""Max abs difference of CLS and patch tokens against the reference implementation, per size.

DINOv2: against Meta's code. DINOv3: against transformers' ``DINOv3ViTModel`` (Meta's DINOv3
code is not on PyPI, and timm cannot be imported on the build machine).

One random Meta-layout state dict per model (true widths and head counts, 3 blocks) is
run by Meta's reference code (PyPI ``dinov2``), by dinomask's loader, and by plain
transformers (what dinomask did before it followed Meta's position-embedding rule)::

    python benchmarks/fidelity_table.py

Needs ``pip install --no-deps dinov2==0.0.1.dev2`` (scripts/setup.sh installs it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.backbones import test_dinov3 as v3  # noqa: E402
from tests.backbones.test_fidelity import SIZES, meta_forward, meta_model, ours, save_source  # noqa: E402

from dinomask.backbones import load_backbone  # noqa: E402
from dinomask.backbones.meta_v2 import meta_to_transformers  # noqa: E402


def main() -> None:
    print("| model | size (h x w) | grid | dinomask CLS | dinomask patches | transformers CLS | transformers patches |")
    print("|---|---|---|---|---|---|---|")
    for arch in ("vits14", "vitb14"):
        for registers in (0, 4):
            model, state = meta_model(arch, registers)
            with tempfile.TemporaryDirectory() as tmp:
                backbone = load_backbone(save_source(state, Path(tmp), "meta-pth"), device="cpu", dtype="float32",
                                         runtime="torch")
            plain = meta_to_transformers(state).eval()
            for height, width in SIZES:
                pixels = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
                cls, patches = meta_forward(model, state, pixels)
                got_cls, got_patches = ours(backbone, pixels)
                with torch.no_grad():
                    hidden = plain(pixel_values=pixels).last_hidden_state
                hf_cls, hf_patches = hidden[:, 0], hidden[:, 1 + registers:]
                name = f"{arch}{'_reg' if registers else ''}"
                print(f"| {name} | {height}x{width} | {height // 14}x{width // 14} | "
                      f"{(got_cls - cls).abs().max():.1e} | {(got_patches - patches).abs().max():.1e} | "
                      f"{(hf_cls - cls).abs().max():.1e} | {(hf_patches - patches).abs().max():.1e} |")


def dinov3_table() -> None:
    from dinomask.backbones import export_onnx
    from dinomask.backbones.onnx_runtime import load_onnx_file

    print("\n| DINOv3 model | size (h x w) | grid | Meta .pth CLS | Meta .pth patches | hub folder patches | ONNX fp32 patches |")
    print("|---|---|---|---|---|---|---|")
    for name, width in (("vits16", 384), ("vitb16", 768)):
        model = v3.tiny_dinov3(width=width)
        with tempfile.TemporaryDirectory() as tmp:
            meta = load_backbone(v3.save_source(model, Path(tmp), "meta-pth"), device="cpu", dtype="float32", runtime="torch")
            hub = load_backbone(v3.save_source(model, Path(tmp), "hub-folder"), device="cpu", dtype="float32", runtime="torch")
            export_onnx(hub, Path(tmp) / "v3.onnx")
            onnx = load_onnx_file(Path(tmp) / "v3.onnx")
            for height, width_px in v3.SIZES:
                pixels = torch.randn(1, 3, height, width_px, generator=torch.Generator().manual_seed(height * width_px))
                cls, patches = v3.reference_features(model, pixels)
                diffs = [(got - want).abs().max() for backbone in (meta, hub, onnx)
                         for got, want in zip(v3.ours(backbone, pixels), (cls, patches))]
                print(f"| {name} | {height}x{width_px} | {height // 16}x{width_px // 16} | {diffs[0]:.1e} | {diffs[1]:.1e} | "
                      f"{diffs[3]:.1e} | {diffs[5]:.1e} |")


if __name__ == "__main__":
    main()
    dinov3_table()
