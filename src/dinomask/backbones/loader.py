"""``load_backbone``: a source and a runtime in, a ready backbone out (torch or ONNX Runtime)."""

from __future__ import annotations

import dataclasses

import os
from contextlib import contextmanager
from pathlib import Path

from dinomask.backbones.devices import resolve_device, resolve_dtype
from dinomask.backbones.registry import default_model
from dinomask.backbones.sources import load_model, missing_model_message, read_norm
from dinomask.backbones.spec import IMAGENET_MEAN, IMAGENET_STD
from dinomask.backbones.torch_runtime import Backbone, wrap_model
from dinomask.errors import DinomaskError, ModelNotFoundError

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


@contextmanager
def quiet_loading():
    """transformers' weight-loading progress bar off for the block (one bar per load is noise in a CLI)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(
    source: str | None = None, *, device: str = "auto", dtype: str = "auto", runtime: str = "auto",
    busy_wait: bool = True,
) -> "Backbone":
    """Load a DINOv2 backbone from a short name, hub id, directory or checkpoint file.

    The plain, exact path is ``runtime="torch", dtype="float32"``. The default
    (``auto``/``auto``) is the fast path the hardware supports: on CUDA, torch with fp16;
    on CPU, ONNX Runtime with int8 weights when its features stay within cosine 0.99 of
    fp32 on a test image (checked at export), else ONNX fp32, else torch (bf16 where the
    CPU has native bf16).

    Args:
        source: see the module docstring for accepted forms, or an ``.onnx`` file
            written by ``dinomask export-onnx``; None: ``DINOMASK_MODEL`` when set, else
            :data:`DEFAULT_BACKBONE` (see :func:`~dinomask.backbones.registry.default_model`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: torch runtime only: ``float32`` (exact), ``bfloat16``, ``float16`` or
            ``auto`` (see :func:`resolve_dtype`).
        runtime: ``auto``, ``torch``, ``onnx`` (fp32) or ``onnx-int8``.
        busy_wait: ONNX Runtime only: idle threads spin. Pass False when other threads
            work beside the model (the live loop); see :class:`~dinomask.backbones.onnx_runtime.OnnxBackbone`.

    Raises:
        ModelNotFoundError: the weights could not be found or read; the message says
            where it looked and how to fix it.
    """

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    source = default_model() if source is None else source
    if source.endswith(".onnx"):
        from dinomask.backbones.onnx_runtime import load_onnx_file

        if not Path(source).is_file():
            raise ModelNotFoundError(missing_model_message(source, None, f"no such file: {source}"))
        onnx = load_onnx_file(source, busy_wait)
        # a reference made with it records this file, not the folder it was exported from (which
        # may not travel with the export): 'remove' without --model then loads this file again
        onnx.spec = dataclasses.replace(onnx.spec, name=str(Path(source).resolve()))
        return onnx
    torch_device = resolve_device(device)
    entry = _ready_entry(source, runtime) if runtime != "torch" and torch_device.type == "cpu" else None
    if entry is not None:
        ready = _ready_onnx(entry, busy_wait)
        if ready is not None:
            return ready
    torch_dtype = resolve_dtype(dtype, torch_device)
    with quiet_loading():
        model, norm_dir, files = load_model(source)
    mean, std = read_norm(norm_dir) if norm_dir else (IMAGENET_MEAN, IMAGENET_STD)
    local = Path(os.path.expanduser(source))
    name = str(local.resolve()) if local.exists() else source  # a saved reference finds it again
    backbone = wrap_model(model, name, mean, std, torch_device, torch_dtype, files)
    if runtime == "torch" or (runtime == "auto" and torch_device.type != "cpu"):
        return backbone
    if torch_device.type != "cpu":
        raise ValueError(f"runtime {runtime!r} runs on CPU only; use --runtime torch on {torch_device}")
    fast = _onnx_fast_path(backbone, runtime, busy_wait)
    fast.random_weights = backbone.random_weights
    if fast is not backbone:
        entry = entry or _ready_entry(source, runtime)  # a hub model's files exist once it is downloaded
        if entry is not None:
            _remember_ready(entry, fast)
    return fast


# ----------------------------------------------------------------------------- the ready index
# An ONNX export chosen for a source is remembered by the files it came from (paths, sizes,
# modification times: the key of the fingerprint cache), so that the next load of the same files
# opens the export at once, without importing transformers, building the torch model and hashing
# its weights: 'dinomask remove' on one image went from 5.6 s to under 3 s on the build machine.
# The export itself was checked against fp32 when it was made; a changed file is a new key.


def _source_files(source: str) -> list[Path]:
    """The files a source's weights are read from, found without loading them (none: unknown)."""
    from dinomask.backbones.registry import BACKBONES
    from dinomask.backbones.sources import _cached_snapshot_dir, _folder_files

    try:
        path = Path(os.path.expanduser(source))
        if path.is_file():
            return [path] + ([path.parent / "config.json"] if (path.parent / "config.json").is_file() else [])
        if path.is_dir():
            return _folder_files(path) if (path / "config.json").is_file() else []
        if source.startswith((".", "/", "~")):
            return []
        snapshot = _cached_snapshot_dir(BACKBONES.get(source, source))
    except (OSError, ValueError):
        return []
    return _folder_files(snapshot) if snapshot is not None else []


def _ready_entry(source: str, runtime: str) -> Path | None:
    """Where the export chosen for ``source``'s files and ``runtime`` is remembered (None: files unknown)."""
    import hashlib

    from dinomask.backbones.weights import _files_key, cache_dir

    files = _source_files(source)
    key = _files_key(files) if files else None
    if key is None:
        return None
    name = hashlib.sha256(f"{key}|{source}|{runtime}".encode()).hexdigest()[:32]
    return cache_dir() / "ready" / f"{name}.json"


def _ready_onnx(entry: Path, busy_wait: bool):
    """The ONNX backbone remembered at ``entry`` (:func:`_ready_entry`), or None."""
    import json

    from dinomask.backbones.onnx_runtime import _from_info, read_info
    from dinomask.backbones.spec import BackboneSpec

    if not entry.is_file():
        return None
    try:
        record = json.loads(entry.read_text())
        fields = record["spec"]
        spec = BackboneSpec(**{**fields, "mean": tuple(fields["mean"]), "std": tuple(fields["std"])})
        path = Path(record["onnx"])
        if not path.is_file():
            return None
        onnx = _from_info(path, read_info(path), busy_wait, spec=spec)
    except (OSError, ValueError, KeyError, TypeError, DinomaskError):
        return None  # a damaged or stale record: load the long way, which writes it anew
    onnx.random_weights = record.get("random_weights")
    return onnx


def _remember_ready(entry: Path, onnx) -> None:
    import json

    record = {"spec": dataclasses.asdict(onnx.spec), "onnx": str(onnx.path), "random_weights": onnx.random_weights}
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, entry)
    except OSError:
        pass  # a read-only cache only costs the long way next time


def _onnx_fast_path(backbone: "Backbone", runtime: str, busy_wait: bool = True):
    """``onnx``/``onnx-int8`` as asked, or for ``auto`` the fastest export that stays faithful."""
    import importlib.util
    import logging

    from dinomask.backbones.onnx_runtime import MAX_EXPORT_BYTES, MIN_FIDELITY, fp32_bytes, onnx_for

    log = logging.getLogger("dinomask")
    if runtime != "auto":
        onnx = onnx_for(backbone, int8=runtime == "onnx-int8", busy_wait=busy_wait)
        if onnx.fidelity < MIN_FIDELITY:
            log.warning("%s features are at cosine %.4f of fp32 (below %.2f)", runtime, onnx.fidelity, MIN_FIDELITY)
        return onnx
    size = fp32_bytes(backbone.model)
    if importlib.util.find_spec("onnxruntime") is None or size > MAX_EXPORT_BYTES:
        return backbone
    for int8 in (True, False):
        onnx = onnx_for(backbone, int8=int8, busy_wait=busy_wait)
        if onnx.fidelity >= MIN_FIDELITY:
            return onnx
        log.warning("ONNX %s features were at cosine %.4f of fp32; not used", onnx.quantization, onnx.fidelity)
    return backbone
