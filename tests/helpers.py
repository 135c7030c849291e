"""Test helpers: a planted-feature backbone and image factories."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from dinomask.backbones import Backbone, BackboneSpec

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 200, 0)


class ColourPatchModel(torch.nn.Module):
    """Stands in for a ViT: token i is the mean (normalised) colour of patch i."""

    def __init__(self, patch: int = 14):
        super().__init__()
        self.patch = patch
        self.config = SimpleNamespace(patch_size=patch, hidden_size=3, num_register_tokens=0)

    def forward(self, pixel_values):
        pooled = torch.nn.functional.avg_pool2d(pixel_values, self.patch)  # B x 3 x h x w
        tokens = pooled.flatten(2).transpose(1, 2)  # B x hw x 3
        cls = tokens.mean(dim=1, keepdim=True)
        return SimpleNamespace(last_hidden_state=torch.cat([cls, tokens], dim=1))


def make_colour_backbone(fingerprint: str = "colour") -> Backbone:
    spec = BackboneSpec(
        name="colour-test", patch_size=14, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        feature_dim=3, num_register_tokens=0, fingerprint=fingerprint,
    )
    return Backbone(ColourPatchModel(), spec, torch.device("cpu"), torch.float32)


def canvas(height: int, width: int, colour=BLUE) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = colour
    return image


def cell_box(height: int, width: int, grid: tuple[int, int], rows: slice, cols: slice) -> tuple[int, int, int, int]:
    """Pixel box (y0, y1, x0, x1) in the frame that patch cells rows x cols cover."""
    gh, gw = grid
    y0 = round(rows.start * height / gh)
    y1 = round(rows.stop * height / gh)
    x0 = round(cols.start * width / gw)
    x1 = round(cols.stop * width / gw)
    return y0, y1, x0, x1


def reference_on_black(size: int = 140, colour=RED, margin: int | None = None) -> np.ndarray:
    """An object of one colour in the middle, background painted black ``margin`` px wide."""
    image = np.zeros((size, size, 3), np.uint8)
    q = size // 4 if margin is None else margin
    image[q:size - q, q:size - q] = colour
    return image


def peak_rss_growth(work) -> float:
    """Run ``work()`` and return how far this process's peak RSS rose over its RSS before (MiB).

    The peak (``VmHWM``) is reset first through ``/proc/self/clear_refs`` (Linux)."""
    from pathlib import Path

    status = Path("/proc/self/status")

    def field(name: str) -> float:
        line = next(l for l in status.read_text().splitlines() if l.startswith(name + ":"))
        return int(line.split()[1]) / 1024

    Path("/proc/self/clear_refs").write_text("5")
    before = field("VmRSS")
    work()
    return field("VmHWM") - before


def textured(height: int, width: int, seed: int, tint=(0.2, 0.3, 0.9), scales=(2.0,)) -> np.ndarray:
    """Smooth random texture (flow needs texture), tinted towards one colour. ``scales``: blur
    sigmas (px) of the noise octaves summed; a texture with coarse octaves too (as real objects
    have) lets a flow pyramid follow motions larger than the finest octave's grain."""
    rng = np.random.default_rng(seed)
    noise = sum(cv2.GaussianBlur(rng.uniform(0, 1, (height, width)).astype(np.float32), (0, 0), sigma) * sigma ** 0.5
                for sigma in scales)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    image = np.stack([0.35 * noise + 0.65 * t for t in tint], axis=2)
    return (image * 255).astype(np.uint8)


def assert_tables_render(text: str) -> None:
    """Every Markdown table line of ``text`` renders as a table row (a newline or a bare pipe in a
    cell ends the table, or splits it, on GitHub and MkDocs): parsed by Python-Markdown, as MkDocs does."""
    import markdown

    html = markdown.markdown(text, extensions=["tables"])
    rows = [line for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    assert html.count("<tr>") == len(rows), (html.count("<tr>"), len(rows))


def import_benchmark(name: str):
    """The script ``benchmarks/NAME.py`` as a module (benchmarks/ is on the import path only while
    it is imported, so a script that imports another one beside it finds it)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
