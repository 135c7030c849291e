"""A corpus of odd and hostile image files through the API, the CLI and the server.

Every file either works (an output of the input's size) or fails with an error that names it;
nothing crashes a run, and peak memory stays under a stated budget. The same corpus goes
through the server in tests/serve/test_corpus.py.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinomask.cli import main
from tests.helpers import peak_rss_growth
from dinomask.errors import ImageReadError
from dinomask.preprocess import load_image
from dinomask.segmenter import Segmenter

#: The most the whole corpus may add to this process's peak RSS, through the API and the CLI (MiB).
#: Without the token budget the 1x5000 file alone asks for a 185,000x37 grid (about 20 GB).
RSS_BUDGET_MB = 400


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width x height`` (the data that follows is a stub)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def build_corpus(folder: Path) -> dict[str, bool]:
    """Write the corpus; returns file name -> whether it should work (False: a named failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (48, 64, 3), np.uint8)
    base = Image.fromarray(scene)
    works: dict[str, bool] = {}

    def put(name: str, data: bytes, ok: bool) -> None:
        (folder / name).write_bytes(data)
        works[name] = ok

    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        image = base.convert("L").convert(mode) if mode == "1" else base.convert(mode)
        if mode == "I;16":
            image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
        put(f"mode-{mode.replace(';', '')}.png", _encoded(image, "PNG"), True)
    for mode in ("CMYK", "F", "I", "YCbCr"):
        image = base.convert("L").convert(mode) if mode in ("F", "I") else base.convert(mode)
        put(f"mode-{mode}.tiff", _encoded(image, "TIFF"), True)
    put("jpeg.jpg", _encoded(base, "JPEG"), True)
    put("webp.webp", _encoded(base, "WEBP"), True)
    put("bmp.bmp", _encoded(base, "BMP"), True)
    for shape in ((1, 5000), (5000, 1), (1, 10), (2, 2)):
        put(f"thin-{shape[0]}x{shape[1]}.png", _encoded(Image.fromarray(np.full(shape + (3,), 99, np.uint8)), "PNG"), True)
    put("declares-100000x100000.png", _png_declaring(100_000, 100_000), False)
    put("truncated-jpeg.jpg", _encoded(base, "JPEG")[:200], False)
    put("truncated-png.png", _encoded(base, "PNG")[:120], False)
    put("empty.png", b"", False)
    put("text.png", b"this is not an image\n", False)
    put("png-named.jpg", _encoded(base, "PNG"), True)  # mislabelled but a real image: decoded by content
    put("random.webp", rng.integers(0, 256, 4096, np.uint8).tobytes(), False)
    return works


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, bool]]:
    folder = tmp_path_factory.mktemp("corpus") / "in"
    return folder, build_corpus(folder)


def test_every_file_through_the_api_works_or_names_itself(corpus, tiny_backbone, davis):
    from dinomask.reference import Reference

    folder, works = corpus
    reference = Reference.from_images(tiny_backbone, [davis / "JPEGImages/480p/dog/00000.jpg"],
                                      [davis / "Annotations/480p/dog/00000.png"])
    segmenter = Segmenter(tiny_backbone, reference)
    outcomes = {}

    def run():
        for name in works:
            try:
                image = load_image(folder / name)
                result = segmenter.predict(image)
                assert result.mask.shape == image.shape[:2]
                outcomes[name] = True
            except ImageReadError as exc:
                assert name in str(exc), exc
                outcomes[name] = False

    growth = peak_rss_growth(run)
    print(f"corpus through the API: peak RSS +{growth:.0f} MiB")
    assert outcomes == works
    assert growth < RSS_BUDGET_MB


def test_the_corpus_through_the_cli_fails_per_file_and_finishes(corpus, dog_ref, tmp_path, capsys):
    folder, works = corpus
    out = tmp_path / "out"
    code = [None]
    growth = peak_rss_growth(lambda: code.__setitem__(0, main(["remove", str(folder), "-r", str(dog_ref), "-o", str(out), "-q"])))
    said = capsys.readouterr()
    print(f"corpus through the CLI: peak RSS +{growth:.0f} MiB")
    assert code[0] == 1 and "Traceback" not in said.err
    for name, ok in works.items():
        output = out / (Path(name).stem + ".png")
        if ok:
            assert output.is_file(), (name, said.err)
            source = Image.open(folder / name)
            assert Image.open(output).size == source.size, name
        else:
            assert not output.exists() and f"FAILED {folder / name}" in said.err, name
    assert f"{sum(works.values())} written" in said.err and f"{len(works) - sum(works.values())} failed" in said.err
    assert growth < RSS_BUDGET_MB
