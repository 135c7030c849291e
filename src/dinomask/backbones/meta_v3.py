"""Meta's DINOv3 ViT checkpoints (facebookresearch/dinov3 layout) converted to transformers'
``DINOv3ViTModel``.

Meta's keys: ``cls_token``, ``storage_tokens`` (the registers), ``mask_token``,
``patch_embed.proj``, ``rope_embed.periods``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,
norm2,mlp.fc1|w1,mlp.fc2|w2,mlp.w3,ls2.gamma}`` and ``norm``. The fused ``qkv`` is split; its
key bias is masked to zero in Meta's code (``bias_mask``), and transformers has no key bias,
so it is dropped. RoPE has no weights: its base is read back from ``periods``
(``periods[k] = base ** (4k / head_dim)``) and checked against the config's formula.
"""

from __future__ import annotations

from dinomask.backbones.meta_v2 import block_index, unwrap_meta
from dinomask.backbones.weights import check_block_indices, check_config
from dinomask.errors import ModelNotFoundError

HEAD_DIM = 64  # every released DINOv3 ViT uses 64-dim heads


def is_meta_v3_state_dict(state: dict) -> bool:
    return "patch_embed.proj.weight" in state and "pos_embed" not in state and (
        "storage_tokens" in state or "rope_embed.periods" in state)


def _rope_theta(state: dict, head_dim: int) -> float:
    import torch

    periods = state.get("rope_embed.periods")
    if periods is None or periods.numel() < 2:
        return 100.0
    periods = periods.float()
    theta = float(periods[1]) ** (head_dim / 4)
    expected = theta ** (4 * torch.arange(periods.numel()).float() / head_dim)
    if not torch.allclose(periods, expected, rtol=1e-2):
        raise ModelNotFoundError("the checkpoint's rope_embed.periods do not follow base ** (4k / head_dim); "
                                 "this DINOv3 variant is not supported")
    return round(theta, 3)


def meta_v3_to_transformers(state: dict):
    """Build a transformers ``DINOv3ViTModel`` from a Meta-layout DINOv3 ViT state dict.

    Args:
        state: tensors keyed as in facebookresearch/dinov3, optionally wrapped in ``teacher``/``model``.

    Returns:
        The model with every weight loaded with ``strict=True``.
    """
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    state = unwrap_meta(state)
    if not is_meta_v3_state_dict(state):
        raise ModelNotFoundError("expected a Meta DINOv3 checkpoint with 'patch_embed.proj.weight' and "
                                 f"'storage_tokens' or 'rope_embed.periods', got keys {sorted(state)[:6]}...")
    if any(k.startswith(("local_cls_norm", "cls_norm")) for k in state):
        raise ModelNotFoundError("this DINOv3 checkpoint has separate CLS and patch norms (the 7B model); "
                                 "transformers' DINOv3ViTModel has one norm, so it is not supported")
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    if dim < 1 or patch < 1:
        raise ModelNotFoundError(f"this checkpoint has hidden_size {dim} and patch_size {patch}; both must be at least 1")
    layers = check_block_indices((block_index(k) for k in state if k.startswith("blocks.")), "this checkpoint")
    gated = "blocks.0.mlp.w1.weight" in state
    hidden = state["blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"].shape[0]
    registers = state["storage_tokens"].shape[1] if "storage_tokens" in state else 0
    heads = max(1, dim // HEAD_DIM)
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    config = DINOv3ViTConfig(
        hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=hidden,
        patch_size=patch, num_register_tokens=registers, rope_theta=_rope_theta(state, dim // heads),
        use_gated_mlp=gated, hidden_act="silu" if gated else "gelu", key_bias=False, query_bias=qkv_bias,
        value_bias=qkv_bias, proj_bias="blocks.0.attn.proj.bias" in state,
        mlp_bias=f"blocks.0.mlp.{'w1' if gated else 'fc1'}.bias" in state, layerscale_value=1.0,
    )
    check_config(config, "this checkpoint")
    model = DINOv3ViTModel(config)
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": state["mask_token"].reshape(1, 1, dim),
        "embeddings.patch_embeddings.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": state["patch_embed.proj.bias"],
        "norm.weight": state["norm.weight"],
        "norm.bias": state["norm.bias"],
    }
    if registers:
        out["embeddings.register_tokens"] = state["storage_tokens"]
    mlp = {"w1": "gate_proj", "w2": "up_proj", "w3": "down_proj"} if gated else {"fc1": "up_proj", "fc2": "down_proj"}
    for i in range(layers):
        src, dst = f"blocks.{i}.", f"model.layer.{i}."
        for part in ("norm1", "norm2"):
            for t in ("weight", "bias"):
                out[f"{dst}{part}.{t}"] = state[f"{src}{part}.{t}"]
        q, k, v = state[f"{src}attn.qkv.weight"].chunk(3, dim=0)
        out[f"{dst}attention.q_proj.weight"], out[f"{dst}attention.k_proj.weight"], out[f"{dst}attention.v_proj.weight"] = q, k, v
        if qkv_bias:
            bias = state[f"{src}attn.qkv.bias"]
            mask = state.get(f"{src}attn.qkv.bias_mask")
            bias = bias * mask if mask is not None else bias
            qb, kb, vb = bias.chunk(3, dim=0)
            if kb.abs().max() > 0:
                raise ModelNotFoundError(f"block {i} has a key bias; DINOv3ViTModel has none (Meta's masks it to 0)")
            out[f"{dst}attention.q_proj.bias"], out[f"{dst}attention.v_proj.bias"] = qb, vb
        for t in ("weight", "bias"):
            name = f"{src}attn.proj.{t}"
            if name in state:
                out[f"{dst}attention.o_proj.{t}"] = state[name]
            for meta_name, hf_name in mlp.items():
                if f"{src}mlp.{meta_name}.{t}" in state:
                    out[f"{dst}mlp.{hf_name}.{t}"] = state[f"{src}mlp.{meta_name}.{t}"]
        for n in (1, 2):
            gamma = state.get(f"{src}ls{n}.gamma")
            out[f"{dst}layer_scale{n}.lambda1"] = gamma if gamma is not None else torch.ones(dim)
    model.load_state_dict({k: torch.as_tensor(v).float() for k, v in out.items()}, strict=True)
    return model
