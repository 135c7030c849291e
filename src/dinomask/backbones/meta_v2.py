"""Meta's DINOv2 (facebookresearch/dinov2): its checkpoint layout converted to transformers',
and its interpolation of position embeddings, which transformers does differently."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dinomask.backbones.registry import model_class
from dinomask.backbones.weights import check_block_indices, check_config
from dinomask.errors import ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import torch

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
    (``tests/backbones/test_fidelity.py`` checks it against Meta's own code).

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


def hf_key_style(model) -> dict[str, str]:
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


def unwrap_meta(state: dict) -> dict:
    for key in ("teacher", "model", "state_dict"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    prefix = "backbone."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def block_index(key: str) -> int:
    """``blocks.N.*`` -> N; a key whose N is not a small whole number is refused."""
    part = key.split(".")[1] if key.count(".") >= 1 else ""
    if not part.isdigit() or len(part) > 6:
        raise ModelNotFoundError(f"expected keys 'blocks.N.*' with N a block number, got {key[:80]!r}")
    return int(part)


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

    state = unwrap_meta(state)
    if not is_meta_state_dict(state):
        raise ModelNotFoundError(
            "expected a Meta DINOv2 checkpoint with keys 'pos_embed' and 'patch_embed.proj.weight', "
            f"got keys {sorted(state)[:6]}..."
        )
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    if dim < 1 or patch < 1:
        raise ModelNotFoundError(f"this checkpoint has hidden_size {dim} and patch_size {patch}; both must be at least 1")
    layers = check_block_indices((block_index(k) for k in state if k.startswith("blocks.")), "this checkpoint")
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
    check_config(config, "this checkpoint")
    model = model_class(config.model_type)(config)
    style = hf_key_style(model)

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
