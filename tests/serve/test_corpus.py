"""The fuzz corpus of tests/test_fuzz_corpus.py through the server: 200 or a named 413/415, never a 500."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.test_fuzz_corpus import _encoded, build_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "in"
    return folder, build_corpus(folder)


def test_the_corpus_through_the_server_never_gives_a_500(corpus, server):
    folder, works = corpus
    painted = np.zeros((140, 140, 3), np.uint8)
    painted[30:110, 30:110] = (200, 120, 40)
    ref = httpx.post(f"{server}/v1/references", files={"image": ("p.png", _encoded(Image.fromarray(painted), "PNG"), "image/png")},
                     data={"background": "black"}).json()["id"]
    for name, ok in works.items():
        response = httpx.post(f"{server}/v1/remove", params={"reference": ref},
                              files={"image": (name, (folder / name).read_bytes(), "application/octet-stream")}, timeout=60)
        accepted = ok and not name.endswith((".tiff", ".bmp"))  # the API takes JPEG, PNG and WebP only
        if accepted:
            assert response.status_code == 200, (name, response.text)
            assert Image.open(io.BytesIO(response.content)).size == Image.open(folder / name).size
        else:
            assert response.status_code in (413, 415), (name, response.status_code, response.text)
            assert response.json()["detail"].startswith("image ")
