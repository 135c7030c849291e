"""What a set of weights may be before anything is built from it, and what it is after.

* :func:`check_config`: an architecture's sizes are checked before a model is built (a
  ``config.json`` asking for 10,000 layers or 0 heads is refused, not built for minutes).
* :func:`check_zip_budget`: a zip-based file (``.pth``, ``.npz``) whose members would inflate
  past a budget is refused before one byte is decompressed.
* :func:`check_loaded`: a loading that left a weight missing, unexpected or of another shape is
  refused (no layer is ever left random).
* :func:`fingerprint`: a hash of every weight, so two models with different weights never share
  a fingerprint (a reference or a cached ONNX export made with one is refused by the other). It
  is cached by the source files' paths, sizes and modification times, so a large model is
  hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Iterable

from dinomask.errors import ModelNotFoundError

#: The largest architecture accepted (DINOv2 ViT-g/14 has 40 layers, 1536 wide, 24 heads; the
#: DINOv3 7B model 40 layers, 4096 wide).
MAX_LAYERS = 64
MAX_HIDDEN = 8192
MAX_HEADS = 128
MAX_PATCH = 64
MAX_REGISTERS = 64
MAX_MLP = 8 * MAX_HIDDEN

#: The most elements a position table may hold (positions x width): 256 MiB of fp32. DINOv2
#: ViT-g at 518 px holds 1,370 x 1,536 = 2.1 M; a 51,800 px ``image_size`` asks for billions.
MAX_POSITION_ELEMENTS = 2**26
#: The most parameters a config may describe, computed from its sizes before anything is built
#: (DINOv3's 7B model has 6.7 billion).
MAX_PARAMETERS = 8_000_000_000

#: Bumped when what the fingerprint covers changes (old cached values are then not reused).
FINGERPRINT_VERSION = 2


def _int_field(config, name: str, where: str, low: int, high: int, required: bool = True) -> int | None:
    value = getattr(config, name, None)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelNotFoundError(f"{where}: {name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ModelNotFoundError(f"{where}: {name} must be between {low} and {high}, got {value}")
    return value


def check_config(config, where: str, partial: bool = False) -> None:
    """Refuse an architecture a DINOv2/DINOv3 checkpoint cannot have, before it is built.

    Args:
        config: a transformers ``Dinov2Config``, ``Dinov2WithRegistersConfig`` or ``DINOv3ViTConfig``,
            or any object with those attributes.
        where: the file or folder it came from (named in the message).
        partial: check only the fields present (a raw ``config.json``, whose absent fields take
            transformers' defaults).

    Raises:
        ModelNotFoundError: a size is not a whole number, out of range, or inconsistent.
    """
    hidden = _int_field(config, "hidden_size", where, 1, MAX_HIDDEN, required=not partial)
    _int_field(config, "num_hidden_layers", where, 1, MAX_LAYERS, required=not partial)
    heads = _int_field(config, "num_attention_heads", where, 1, MAX_HEADS, required=not partial)
    _int_field(config, "patch_size", where, 1, MAX_PATCH, required=not partial)
    _int_field(config, "num_register_tokens", where, 0, MAX_REGISTERS, required=False)
    _int_field(config, "intermediate_size", where, 1, MAX_MLP, required=False)
    _int_field(config, "image_size", where, 1, 100_000, required=False)
    _int_field(config, "num_channels", where, 3, 3, required=False)
    ratio = getattr(config, "mlp_ratio", None)
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 8):
        raise ModelNotFoundError(f"{where}: mlp_ratio must be a number in (0, 8], got {ratio!r}")
    if hidden is not None and heads is not None and hidden % heads:
        raise ModelNotFoundError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    positions, parameters = config_products(config)
    if positions > MAX_POSITION_ELEMENTS:
        raise ModelNotFoundError(f"{where}: image_size, patch_size and hidden_size ask for a position table of "
                                 f"{positions:,} values ({positions * 4 / 2**30:.1f} GiB); at most "
                                 f"{MAX_POSITION_ELEMENTS:,} are accepted")
    if parameters > MAX_PARAMETERS:
        raise ModelNotFoundError(f"{where}: its sizes describe about {parameters / 1e9:.1f} billion parameters; "
                                 f"at most {MAX_PARAMETERS / 1e9:.0f} billion are accepted")


def config_products(config) -> tuple[int, int]:
    """``(position table elements, approximate parameter count)`` from a config's sizes, with
    transformers' defaults for absent fields: what building the model will allocate, known before
    it is built (each field may be in bounds while their product is not)."""
    def number(name: str, default: float) -> float:
        value = getattr(config, name, None)
        return default if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 else value

    hidden = number("hidden_size", 768)
    layers = number("num_hidden_layers", 12)
    patch = number("patch_size", 16 if getattr(config, "model_type", "") == "dinov3_vit" else 14)
    image = number("image_size", 224)
    mlp = number("intermediate_size", number("mlp_ratio", 4) * hidden)
    side = int(image // patch) if patch else 0
    positions = int((side * side + 1) * hidden)
    parameters = int(layers * (4 * hidden * hidden + 2 * hidden * mlp) + positions + 3 * patch * patch * hidden)
    return positions, parameters


#: A ``config.json`` larger than this is refused unread (DINOv2's are under 1 KB).
MAX_CONFIG_BYTES = 1_000_000


def read_config_json(path: Path) -> dict:
    """A raw ``config.json`` as a dict, refused (naming the file) when it is over
    :data:`MAX_CONFIG_BYTES`, not JSON, or not a JSON object."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ModelNotFoundError(f"{path} is {size} bytes; a model config is a few KB")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError) as exc:
        raise ModelNotFoundError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_config_file(path: Path) -> None:
    """Check a raw ``config.json`` (size, JSON object, the sizes it gives) before transformers
    reads it, so a bad value is named as such rather than as a library's validation error."""
    from types import SimpleNamespace

    data = read_config_json(path)
    config = SimpleNamespace(**{k: v for k, v in data.items() if isinstance(k, str) and k.isidentifier()})
    check_config(config, str(path), partial=True)
    weights = [p for p in path.parent.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".pth", ".pt")]
    stored = sum(p.stat().st_size for p in weights)
    _, parameters = config_products(config)
    if weights and parameters > stored:  # not even one byte a parameter: the model would be built for nothing
        raise ModelNotFoundError(f"{path} describes about {parameters:,} parameters but the weight files beside it "
                                 f"hold {stored:,} bytes; the config does not belong to these weights")


def check_block_indices(indices: Iterable[int], where: str) -> int:
    """The number of blocks of a Meta checkpoint: indices must run ``0 .. L-1`` with ``L <= MAX_LAYERS``.

    Checked before anything is built: a small file naming ``blocks.200000`` would otherwise
    build 200,001 layers."""
    found = sorted(set(indices))
    if not found:
        raise ModelNotFoundError(f"{where} holds no transformer blocks ('blocks.N.*' keys)")
    if found[-1] >= MAX_LAYERS:
        raise ModelNotFoundError(f"{where} names block {found[-1]}; at most {MAX_LAYERS} blocks are accepted")
    if found != list(range(len(found))):
        missing = sorted(set(range(found[-1] + 1)) - set(found))[:5]
        raise ModelNotFoundError(f"{where} lacks the weights of blocks {missing} (blocks must run 0 to {found[-1]})")
    return len(found)


def check_zip_budget(path: Path, budget: int, what: str) -> None:
    """Refuse a zip-based file whose members would inflate past ``budget`` bytes.

    Reads only the zip's central directory (no member is decompressed).

    Raises:
        ModelNotFoundError: for checkpoints; callers re-raise as their own error class.
    """
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        total = sum(info.file_size for info in archive.infolist())
    if total > budget:
        raise ModelNotFoundError(
            f"{path} would inflate to {total / 2**20:.0f} MiB, over the {budget / 2**20:.0f} MiB a {what} may take"
        )


def check_declared_sizes(state: dict, path: Path, budget: int) -> None:
    """Refuse tensors that declare more elements than their storage holds (a stride-0 view, an
    overlapping ``as_strided``) or more bytes in all than ``budget``: loading would copy what they
    declare, not what the file stores (a 359 KB file declaring 12.75 M positions)."""
    total = 0
    for name, tensor in state.items():
        declared = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes()
        if declared > stored:
            raise ModelNotFoundError(f"{path}: tensor {name} declares {tuple(tensor.shape)} ({declared:,} bytes) over "
                                     f"{stored:,} stored bytes (a strided view, not weights); it is not loaded")
        total += declared
    if total > budget:
        raise ModelNotFoundError(f"{path}: its tensors declare {total / 2**20:.0f} MiB, over the {budget / 2**20:.0f} "
                                 "MiB the file's size allows")


def check_loaded(where: str, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
                 mismatched: Iterable = ()) -> None:
    """Refuse a loading that left weights random (missing), ignored some (unexpected) or
    changed their shape (mismatched)."""
    problems = []
    for words, keys in (("missing", list(missing)), ("unexpected", list(unexpected)), ("of another shape", list(mismatched))):
        if keys:
            shown = ", ".join(str(k[0] if isinstance(k, tuple) else k) for k in keys[:4])
            problems.append(f"{len(keys)} weights {words} ({shown}{', ...' if len(keys) > 4 else ''})")
    if problems:
        raise ModelNotFoundError(f"{where} does not hold this architecture's weights: " + "; ".join(problems)
                                 + ". Layers would be left random, so it is not loaded")


def cache_dir() -> Path:
    """dinomask's cache folder: ``$DINOMASK_CACHE``, default ``~/.cache/dinomask``."""
    return Path(os.environ.get("DINOMASK_CACHE") or Path.home() / ".cache" / "dinomask")


def _files_key(files: Iterable[Path]) -> str | None:
    """A key for the files' paths, sizes and modification times (None when there are none)."""
    stats = []
    for path in sorted({Path(p).resolve() for p in files}):
        try:
            stat = path.stat()
        except OSError:
            return None
        stats.append([str(path), stat.st_size, stat.st_mtime_ns])
    if not stats:
        return None
    return hashlib.sha256(json.dumps([FINGERPRINT_VERSION, stats]).encode()).hexdigest()[:32]


def fingerprint(model, num_registers: int, files: Iterable[Path] = (), where: str = "the model") -> str:
    """A 16-hex-digit hash of the architecture and of every weight and buffer.

    Tensors are hashed in the model's own order as float32 bytes with their shapes (not their
    names, which differ between transformers versions), so the same weights give the same
    fingerprint from a Meta checkpoint and from a Hugging Face folder. One tensor is converted at
    a time (no copy of the whole model). The result is cached under :func:`cache_dir` by the
    ``files`` the weights came from (paths, sizes, mtimes); with no files it is always computed.
    ``where`` names the source in errors.

    Raises:
        ModelNotFoundError: a weight holds NaN or infinite values (such a model writes NaN
            references and blank masks).
    """
    import torch

    key = _files_key(files)
    cached = cache_dir() / "fingerprints" / f"{key}.txt" if key else None
    if cached is not None and cached.is_file():
        text = cached.read_text().strip()
        if len(text) == 16:
            return text
    config = model.config
    digest = hashlib.sha256()
    digest.update(json.dumps([
        config.model_type, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
        config.patch_size, num_registers,
    ]).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            values = tensor.detach().to("cpu", torch.float32).contiguous()
            if not bool(torch.isfinite(values).all()):
                raise ModelNotFoundError(f"{where}: weight {name} holds NaN or infinite values; "
                                         "its features would be NaN, so it is not loaded")
            digest.update(json.dumps(list(values.shape)).encode())
            digest.update(values.numpy().tobytes())
    value = digest.hexdigest()[:16]
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(value)
            os.replace(tmp, cached)
        except OSError:
            pass  # a read-only cache only costs the hashing next time
    return value
