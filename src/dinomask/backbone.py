"""DINOv2 backbones: name or path in, a callable that returns CLS and patch features out.

The architecture is always the one from ``transformers`` (``Dinov2Model`` or
``Dinov2WithRegistersModel``); this module only finds the weights, converts Meta's
official checkpoints to that layout, and wraps the forward pass so that every caller
gets the same named outputs::

    features = backbone(pixel_values)        # pixel_values: B x 3 x H x W float, normalised
    features.cls                              # B x C
    features.patches                          # B x h x w x C, h = H // patch, w = W // patch

Sources accepted by :func:`load_backbone`:

* a short name from :data:`BACKBONES` (``dinov2_vits14``, ``dinov2_vits14_reg``, ...);
* a Hugging Face model id (``facebook/dinov2-small``), from the local cache when
  ``HF_HUB_OFFLINE=1`` or when the hub cannot be reached;
* a local directory written by ``save_pretrained``;
* a local ``.safetensors`` file (Hugging Face or Meta key layout);
* Meta's official ``dinov2_vit*14*_pretrain.pth`` (loaded with ``weights_only=True``).

Nothing is loaded at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dinomask.errors import ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Short names -> Hugging Face model ids. ``_reg`` variants have 4 register tokens.
BACKBONES: dict[str, str] = {
    "dinov2_vits14": "facebook/dinov2-small",
    "dinov2_vitb14": "facebook/dinov2-base",
    "dinov2_vitl14": "facebook/dinov2-large",
    "dinov2_vitg14": "facebook/dinov2-giant",
    "dinov2_vits14_reg": "facebook/dinov2-with-registers-small",
    "dinov2_vitb14_reg": "facebook/dinov2-with-registers-base",
    "dinov2_vitl14_reg": "facebook/dinov2-with-registers-large",
    "dinov2_vitg14_reg": "facebook/dinov2-with-registers-giant",
}

#: The default backbone: ViT-S/14 with registers (no high-norm artifact tokens).
DEFAULT_BACKBONE = "dinov2_vits14_reg"

# Meta's checkpoints do not store the head count; every DINOv2 size uses 64-dim heads.


@dataclass(frozen=True)
class BackboneSpec:
    """What travels with a set of weights and must match between reference and frame.

    Attributes:
        name: the source the user gave (short name, hub id or path).
        patch_size: side of one patch in pixels (14 for DINOv2).
        mean, std: per-channel RGB normalisation for inputs in [0, 1].
        feature_dim: C, the size of one patch / CLS feature.
        num_register_tokens: register tokens between CLS and the patches (0 or 4).
        fingerprint: short hash of architecture and weights; two backbones with the
            same fingerprint produce the same features.
    """

    name: str
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    num_register_tokens: int
    fingerprint: str


@dataclass(frozen=True)
class BackboneFeatures:
    """Named outputs of one forward pass (float32 on the backbone's device).

    Attributes:
        cls: B x C, the final-layer-normed CLS token.
        patches: B x h x w x C, the final-layer-normed patch tokens on the patch grid.
    """

    cls: "torch.Tensor"
    patches: "torch.Tensor"


class Backbone:
    """A loaded DINOv2 with its preprocessing spec; call it on normalised pixels.

    Args:
        model: a transformers ``Dinov2Model`` or ``Dinov2WithRegistersModel`` in eval mode.
        spec: the :class:`BackboneSpec` of these weights.
        device: torch device the model lives on.
        dtype: compute dtype; ``torch.bfloat16``/``torch.float16`` run under autocast
            with float32 weights, ``torch.float32`` runs plain.
    """

    def __init__(self, model, spec: BackboneSpec, device: "torch.device", dtype: "torch.dtype"):
        self.model = model
        self.spec = spec
        self.device = device
        self.dtype = dtype

    def __repr__(self) -> str:
        return (
            f"Backbone(name={self.spec.name!r}, dim={self.spec.feature_dim}, "
            f"registers={self.spec.num_register_tokens}, device={self.device}, dtype={self.dtype})"
        )

    def __call__(self, pixel_values: "torch.Tensor") -> BackboneFeatures:
        """Run the model.

        Args:
            pixel_values: B x 3 x H x W float tensor, normalised with ``spec.mean/std``;
                H and W must be multiples of ``spec.patch_size``.
        """
        import torch

        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"expected pixel_values of shape B x 3 x H x W, got {tuple(pixel_values.shape)}"
            )
        p = self.spec.patch_size
        height, width = pixel_values.shape[-2:]
        if height % p or width % p:
            raise ValueError(
                f"input height {height} and width {width} must be multiples of the patch size {p}"
            )
        pixel_values = pixel_values.to(self.device, torch.float32)
        autocast = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(
            device_type=self.device.type, dtype=self.dtype, enabled=autocast
        ):
            hidden = self.model(pixel_values=pixel_values).last_hidden_state
        hidden = hidden.float()
        start = 1 + self.spec.num_register_tokens
        patches = hidden[:, start:, :].reshape(hidden.shape[0], height // p, width // p, -1)
        return BackboneFeatures(cls=hidden[:, 0, :], patches=patches)


# --------------------------------------------------------------------------- helpers


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


def _fingerprint(model, num_registers: int) -> str:
    config = model.config
    weight = model.embeddings.patch_embeddings.projection.weight.detach().float().cpu()
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [config.model_type, config.hidden_size, config.num_hidden_layers,
             config.patch_size, num_registers]
        ).encode()
    )
    digest.update(weight.flatten()[:4096].numpy().astype(np.float32).tobytes())
    return digest.hexdigest()[:16]


def _read_norm(directory: Path) -> tuple[tuple, tuple]:
    path = directory / "preprocessor_config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        mean, std = data.get("image_mean"), data.get("image_std")
        if mean and std:
            return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return IMAGENET_MEAN, IMAGENET_STD


def _model_class(model_type: str):
    from transformers import Dinov2Model, Dinov2WithRegistersModel

    if model_type == "dinov2":
        return Dinov2Model
    if model_type == "dinov2_with_registers":
        return Dinov2WithRegistersModel
    raise ModelNotFoundError(
        f"expected a DINOv2 model (model_type 'dinov2' or 'dinov2_with_registers'), "
        f"got model_type {model_type!r}"
    )


def _missing_model_message(source: str, hub_id: str | None, detail: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    lines = [f"Could not load the DINOv2 model {source!r}: {detail}"]
    if hub_id is not None:
        lines += [
            f"Looked for the Hugging Face model {hub_id!r} in the cache {HF_HUB_CACHE}"
            + (" (HF_HUB_OFFLINE=1, so the hub was not asked)." if os.environ.get("HF_HUB_OFFLINE") == "1" else "."),
            "Fix it with one of:",
            f"  dinomask download {source}        # on a machine with internet, then copy HF_HOME across",
            "  --model /path/to/dir               # a directory written by save_pretrained",
            "  --model /path/to/dinov2_vits14_pretrain.pth  # Meta's official checkpoint",
        ]
    else:
        lines += [
            "Expected a directory written by save_pretrained (config.json + weights), a .safetensors "
            "file, a Meta .pth checkpoint, a Hugging Face id, or one of: " + ", ".join(BACKBONES),
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- position embeddings

#: Meta's DINOv2 adds this to the target grid before computing the scale factor of the
#: bicubic resize (``interpolate_offset`` in facebookresearch/dinov2; dino issue #8).
META_INTERPOLATE_OFFSET = 0.1


def meta_position_embeddings(position_embeddings: "torch.Tensor", rows: int, cols: int) -> "torch.Tensor":
    """Position embeddings for a ``rows x cols`` patch grid, computed as Meta's DINOv2 does.

    Meta's released backbones (``hub/backbones.py``: ``interpolate_antialias=False``,
    ``interpolate_offset=0.1``) resize the ``M x M`` table bicubically with
    ``scale_factor=((rows + 0.1) / M, (cols + 0.1) / M)`` and no antialiasing.
    transformers resizes to ``size=(rows, cols)`` (and with antialiasing in the
    registers model), which gives other embeddings at every grid but ``M x M``
    (up to 0.07 apart on the patch tokens at 224 x 224); users of real weights
    expect Meta's numbers, so dinomask always uses this one
    (``tests/test_backbone_fidelity.py`` checks it against Meta's own code).

    Args:
        position_embeddings: ``1 x (1 + M*M) x C``, the CLS position first.
        rows, cols: the patch grid of the input.

    Returns:
        ``1 x (1 + rows*cols) x C`` in the table's dtype.
    """
    import math

    import torch

    table = position_embeddings
    positions = table.shape[1] - 1
    side = int(math.isqrt(positions))
    if side * side != positions:
        raise ValueError(f"expected a square table of position embeddings, got {positions} positions")
    if rows == cols == side:
        return table
    dim = table.shape[-1]
    grid = table[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = ((rows + META_INTERPOLATE_OFFSET) / side, (cols + META_INTERPOLATE_OFFSET) / side)
    grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    if tuple(grid.shape[-2:]) != (rows, cols):
        raise ValueError(f"position embeddings resized to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat((table[:, :1].float(), grid), dim=1).to(table.dtype)


def use_meta_position_embeddings(embeddings) -> None:
    """Make a transformers DINOv2 embeddings module interpolate as Meta's code does.

    Args:
        embeddings: ``Dinov2Embeddings`` or ``Dinov2WithRegistersEmbeddings`` (changed in place).
    """
    import types

    patch = embeddings.patch_embeddings.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch

    def interpolate_pos_encoding(self, tokens, height: int, width: int):
        return meta_position_embeddings(self.position_embeddings, int(height) // patch_h, int(width) // patch_w)

    embeddings.interpolate_pos_encoding = types.MethodType(interpolate_pos_encoding, embeddings)


# --------------------------------------------------------------------------- Meta checkpoints


def _hf_key_style(model) -> dict[str, str]:
    """Names of the attention / MLP sub-modules in the installed transformers version."""
    keys = set(model.state_dict())
    if "encoder.layer.0.attention.q_proj.weight" in keys:
        attn = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
                "o": "attention.o_proj"}
    else:
        attn = {"q": "attention.attention.query", "k": "attention.attention.key",
                "v": "attention.attention.value", "o": "attention.output.dense"}
    if any(".mlp.gate_proj." in k for k in keys):
        mlp = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    else:
        mlp = {"in": "mlp.weights_in", "out": "mlp.weights_out"}
    return {**attn, **mlp}


def is_meta_state_dict(state: dict) -> bool:
    return "pos_embed" in state and "patch_embed.proj.weight" in state


def _unwrap_meta(state: dict) -> dict:
    for key in ("teacher", "model", "state_dict"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    prefix = "backbone."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def meta_to_transformers(state: dict):
    """Build a transformers DINOv2 from a Meta-layout state dict.

    Args:
        state: tensors keyed as in facebookresearch/dinov2 (``pos_embed``,
            ``blocks.N.attn.qkv.weight``, ...), optionally wrapped in ``teacher``/``model``.

    Returns:
        The model (``Dinov2Model`` or ``Dinov2WithRegistersModel``) with every weight
        loaded with ``strict=True``.
    """
    import torch
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    state = _unwrap_meta(state)
    if not is_meta_state_dict(state):
        raise ModelNotFoundError(
            "expected a Meta DINOv2 checkpoint with keys 'pos_embed' and 'patch_embed.proj.weight', "
            f"got keys {sorted(state)[:6]}..."
        )
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    swiglu = "blocks.0.mlp.w12.weight" in state
    # SwiGLU (ViT-g) derives its hidden size from mlp_ratio 4 the same way in both codebases.
    mlp_ratio = 4 if swiglu else state["blocks.0.mlp.fc1.weight"].shape[0] // dim
    grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    common = dict(
        hidden_size=dim, num_hidden_layers=layers, num_attention_heads=max(1, dim // 64),
        mlp_ratio=mlp_ratio, patch_size=patch, image_size=grid * patch,
        use_swiglu_ffn=swiglu, layerscale_value=1.0,
    )
    if registers:
        config = Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
    else:
        config = Dinov2Config(**common)
    model = _model_class(config.model_type)(config)
    style = _hf_key_style(model)

    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": state["mask_token"].reshape(1, dim),
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    if registers:
        out["embeddings.register_tokens"] = state["register_tokens"]
    for i in range(layers):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("norm1", "norm2"):
            for t in ("weight", "bias"):
                out[f"{dst}{part}.{t}"] = state[f"{src}{part}.{t}"]
        for t in ("weight", "bias"):
            q, k, v = state[f"{src}attn.qkv.{t}"].chunk(3, dim=0)
            out[f"{dst}{style['q']}.{t}"], out[f"{dst}{style['k']}.{t}"], out[f"{dst}{style['v']}.{t}"] = q, k, v
            out[f"{dst}{style['o']}.{t}"] = state[f"{src}attn.proj.{t}"]
        out[f"{dst}layer_scale1.lambda1"] = state[f"{src}ls1.gamma"]
        out[f"{dst}layer_scale2.lambda1"] = state[f"{src}ls2.gamma"]
        for t in ("weight", "bias"):
            if swiglu:
                w1, w2 = state[f"{src}mlp.w12.{t}"].chunk(2, dim=0)
                if "gate" in style:
                    out[f"{dst}{style['gate']}.{t}"], out[f"{dst}{style['up']}.{t}"] = w1, w2
                    out[f"{dst}{style['down']}.{t}"] = state[f"{src}mlp.w3.{t}"]
                else:
                    out[f"{dst}{style['in']}.{t}"] = state[f"{src}mlp.w12.{t}"]
                    out[f"{dst}{style['out']}.{t}"] = state[f"{src}mlp.w3.{t}"]
            else:
                out[f"{dst}mlp.fc1.{t}"] = state[f"{src}mlp.fc1.{t}"]
                out[f"{dst}mlp.fc2.{t}"] = state[f"{src}mlp.fc2.{t}"]
    model.load_state_dict({k: torch.as_tensor(v).float() for k, v in out.items()}, strict=True)
    return model


# --------------------------------------------------------------------------- loading


def _load_file(path: Path):
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    elif path.suffix in (".pth", ".pt", ".bin"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for unreadable files
            raise ModelNotFoundError(
                f"could not read the checkpoint {path}: {exc.__class__.__name__}: {exc}"
            ) from None
    else:
        raise ModelNotFoundError(
            f"expected a .safetensors, .pth, .pt or .bin checkpoint, got {path.name!r}"
        )
    if is_meta_state_dict(_unwrap_meta(state)):
        return meta_to_transformers(state)
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{path} holds Hugging Face-layout weights but there is no config.json beside it; "
            "pass the directory written by save_pretrained instead"
        )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path.parent))
    model = _model_class(config.model_type)(config)
    model.load_state_dict(_to_model_layout(state, model), strict=True)
    return model


_OLD_HF_NAMES = {
    "attention.attention.query": "q", "attention.attention.key": "k",
    "attention.attention.value": "v", "attention.output.dense": "o",
}


def _to_model_layout(state: dict, model) -> dict:
    """Rename Hugging Face keys between the older (``attention.attention.query``,
    ``mlp.weights_in``) and newer (``attention.q_proj``, ``mlp.gate_proj``) layouts to
    whatever the installed transformers' model expects."""
    style = _hf_key_style(model)
    out = {}
    for key, value in state.items():
        renamed = key
        for old, short in _OLD_HF_NAMES.items():
            if f".{old}." in key:
                renamed = key.replace(old, style[short])
        if ".mlp.weights_in." in key and "gate" in style:
            gate, up = value.chunk(2, dim=0)
            out[key.replace("mlp.weights_in", style["gate"])] = gate
            out[key.replace("mlp.weights_in", style["up"])] = up
            continue
        if ".mlp.weights_out." in key and "down" in style:
            renamed = key.replace("mlp.weights_out", style["down"])
        out[renamed] = value
    return out


def _load_pretrained(source: str, local_only: bool):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    return _model_class(config.model_type).from_pretrained(source, local_files_only=local_only)


RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def load_backbone(
    source: str = DEFAULT_BACKBONE, *, device: str = "auto", dtype: str = "auto", runtime: str = "auto",
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
            written by ``dinomask export-onnx``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: torch runtime only: ``float32`` (exact), ``bfloat16``, ``float16`` or
            ``auto`` (see :func:`resolve_dtype`).
        runtime: ``auto``, ``torch``, ``onnx`` (fp32) or ``onnx-int8``.
        busy_wait: ONNX Runtime only: idle threads spin. Pass False when other threads
            work beside the model (the live loop); see :class:`~dinomask.onnx_backbone.OnnxBackbone`.

    Raises:
        ModelNotFoundError: the weights could not be found or read; the message says
            where it looked and how to fix it.
    """
    from transformers.utils import logging as hf_logging

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    if source.endswith(".onnx"):
        from dinomask.onnx_backbone import load_onnx_file

        if not Path(source).is_file():
            raise ModelNotFoundError(_missing_model_message(source, None, f"no such file: {source}"))
        return load_onnx_file(source, busy_wait)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one weight-loading bar per call is noise in a CLI
    try:
        model, norm_dir = _load_model(source)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    mean, std = _read_norm(norm_dir) if norm_dir else (IMAGENET_MEAN, IMAGENET_STD)
    local = Path(os.path.expanduser(source))
    name = str(local.resolve()) if local.exists() else source  # a saved reference finds it again
    backbone = _finish(model, name, mean, std, torch_device, torch_dtype)
    if runtime == "torch" or (runtime == "auto" and torch_device.type != "cpu"):
        return backbone
    if torch_device.type != "cpu":
        raise ValueError(f"runtime {runtime!r} runs on CPU only; use --runtime torch on {torch_device}")
    return _onnx_fast_path(backbone, runtime, busy_wait)


def _onnx_fast_path(backbone: "Backbone", runtime: str, busy_wait: bool = True):
    """``onnx``/``onnx-int8`` as asked, or for ``auto`` the fastest export that stays faithful."""
    import importlib.util
    import logging

    from dinomask.onnx_backbone import MAX_EXPORT_BYTES, MIN_FIDELITY, fp32_bytes, onnx_for

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


def _load_model(source: str):
    """Find and build the model; returns it and the folder that may hold preprocessing settings."""
    path = Path(os.path.expanduser(source))
    hub_id: str | None = None
    norm_dir: Path | None = None
    if path.is_file():
        model = _load_file(path)
        norm_dir = path.parent
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                _missing_model_message(source, None, f"the directory {path} has no config.json")
            )
        try:
            model = _load_pretrained(str(path), local_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(_missing_model_message(source, None, str(exc).splitlines()[0])) from None
        norm_dir = path
    elif source.endswith((".pth", ".pt", ".safetensors", ".bin")) or source.startswith((".", "/", "~")):
        raise ModelNotFoundError(_missing_model_message(source, None, f"no such file or directory: {path}"))
    else:
        hub_id = BACKBONES.get(source, source)
        model = _load_from_hub(source, hub_id)
        norm_dir = _cached_snapshot_dir(hub_id)
    return model, norm_dir


def _finish(model, source: str, mean, std, torch_device, torch_dtype) -> Backbone:
    registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
    spec = BackboneSpec(
        name=source,
        patch_size=int(model.config.patch_size),
        mean=tuple(mean),
        std=tuple(std),
        feature_dim=int(model.config.hidden_size),
        num_register_tokens=registers,
        fingerprint=_fingerprint(model, registers),
    )
    use_meta_position_embeddings(model.embeddings)
    model = model.to(torch_device).eval()
    return Backbone(model, spec, torch_device, torch_dtype)


def _load_from_hub(source: str, hub_id: str):
    from huggingface_hub.errors import HfHubHTTPError

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return _load_pretrained(hub_id, local_only=True)
    except (OSError, ValueError, HfHubHTTPError):
        if offline:
            raise ModelNotFoundError(
                _missing_model_message(source, hub_id, "it is not in the local cache")
            ) from None
    try:
        return _load_pretrained(hub_id, local_only=False)
    except (OSError, ValueError, HfHubHTTPError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ModelNotFoundError(
            _missing_model_message(source, hub_id, f"not cached, and the hub could not be reached ({detail})")
        ) from None


def _cached_snapshot_dir(hub_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def download(source: str, cache_dir: str | None = None) -> Path:
    """Fetch a model from the Hugging Face hub into the local cache for offline use.

    Args:
        source: a short name from :data:`BACKBONES` or a hub id.
        cache_dir: where to store it; default is huggingface_hub's cache (``HF_HOME``).

    Returns:
        The local snapshot directory, which is also a valid ``--model`` path.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    hub_id = BACKBONES.get(source, source)
    try:
        path = snapshot_download(
            hub_id, cache_dir=cache_dir,
            allow_patterns=["*.json", "*.safetensors", "*.txt"],
        )
    except (OSError, ValueError, HfHubHTTPError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ModelNotFoundError(
            f"Could not download {hub_id!r} from the Hugging Face hub: {detail}\n"
            "This needs internet access to huggingface.co. On a machine without it, download there "
            "and copy the cache folder (HF_HOME) or the returned directory across, then pass --model DIR."
        ) from None
    return Path(path)


#: The released DINOv2 shapes: width, blocks, heads (64-dim heads), MLP ratio 4, SwiGLU in ViT-g.
ARCHITECTURES: dict[str, dict] = {
    "vits14": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "vitb14": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "vitl14": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "vitg14": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}


def architecture(short_name: str) -> tuple[dict, int]:
    """Config fields and register count of a short name from :data:`BACKBONES` (true shape)."""
    if short_name not in BACKBONES:
        raise ValueError(f"expected one of {', '.join(BACKBONES)}, got {short_name!r}")
    size = short_name.split("_")[1]
    return dict(ARCHITECTURES[size], mlp_ratio=4), 4 if short_name.endswith("_reg") else 0


def random_backbone_dir(
    directory: str | Path, *, hidden_size: int = 64, layers: int = 2, registers: int = 0,
    seed: int = 0, image_size: int = 518, arch: str | None = None,
) -> Path:
    """Write a DINOv2 with random weights via ``save_pretrained``.

    For tests, demos and benchmarks of speed only: its features carry no meaning, so
    masks made with it say nothing about quality.

    Args:
        directory: where to write ``config.json`` and ``model.safetensors``.
        hidden_size: C; must be a multiple of 32 (a tiny model: 32-dim heads, MLP ratio 2).
        registers: 0 for ``Dinov2Model``, >0 for ``Dinov2WithRegistersModel``.
        arch: a short name (``dinov2_vits14_reg``, ...): the released model's true shape
            (ViT-S/14: 384 wide, 12 blocks, 6 heads, MLP ratio 4); overrides the sizes above.
    """
    import torch
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    common = dict(
        hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=max(1, hidden_size // 32),
        mlp_ratio=2, patch_size=14, image_size=image_size,
    )
    if arch is not None:
        fields, registers = architecture(arch)
        common.update(fields)
    config = (
        Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
        if registers else Dinov2Config(**common)
    )
    torch.manual_seed(seed)
    model = _model_class(config.model_type)(config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    return directory
