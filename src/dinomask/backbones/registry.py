"""The backbones dinomask knows by name: short names, hub ids, true shapes, transformers classes.

DINOv2 (patch 14, interpolated position embeddings) and DINOv3 ViT (patch 16, RoPE, 4
register tokens). DINOv3 weights are released under Meta's DINOv3 licence, not Apache-2.0:
accept it on the model's Hugging Face page before ``dinomask download``.
"""

from __future__ import annotations

from dinomask.errors import ModelNotFoundError

BACKBONES: dict[str, str] = {
    "dinov2_vits14": "facebook/dinov2-small",
    "dinov2_vitb14": "facebook/dinov2-base",
    "dinov2_vitl14": "facebook/dinov2-large",
    "dinov2_vitg14": "facebook/dinov2-giant",
    "dinov2_vits14_reg": "facebook/dinov2-with-registers-small",
    "dinov2_vitb14_reg": "facebook/dinov2-with-registers-base",
    "dinov2_vitl14_reg": "facebook/dinov2-with-registers-large",
    "dinov2_vitg14_reg": "facebook/dinov2-with-registers-giant",
    "dinov3_vits16": "facebook/dinov3-vits16-pretrain-lvd1689m",
    "dinov3_vits16plus": "facebook/dinov3-vits16plus-pretrain-lvd1689m",
    "dinov3_vitb16": "facebook/dinov3-vitb16-pretrain-lvd1689m",
    "dinov3_vitl16": "facebook/dinov3-vitl16-pretrain-lvd1689m",
}
"""Short names -> Hugging Face model ids, for ``load_backbone`` and ``--model``. DINOv2 ``_reg``
variants and every DINOv3 have 4 register tokens. Any hub id or local path works as well."""

#: The default backbone: DINOv2 ViT-S/14 with registers (no high-norm artifact tokens).
DEFAULT_BACKBONE = "dinov2_vits14_reg"


def default_model() -> str:
    """The model used where none is named: ``DINOMASK_MODEL`` (a short name, hub id, folder or
    checkpoint: your own copy, for machines without the hub) when set, else :data:`DEFAULT_BACKBONE`.
    Read when called, never at import."""
    import os

    return os.environ.get("DINOMASK_MODEL", "").strip() or DEFAULT_BACKBONE

#: transformers ``model_type`` -> family.
FAMILIES = {"dinov2": "dinov2", "dinov2_with_registers": "dinov2", "dinov3_vit": "dinov3"}

#: The released shapes: width, blocks, heads (64-dim heads), MLP width. DINOv2 ViT-g and
#: DINOv3 ViT-S+ use a gated (SwiGLU) MLP.
ARCHITECTURES: dict[str, dict] = {
    "dinov2_vits14": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4),
    "dinov2_vitb14": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4),
    "dinov2_vitl14": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4),
    "dinov2_vitg14": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4,
                          use_swiglu_ffn=True),
    "dinov3_vits16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "dinov3_vits16plus": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                              use_gated_mlp=True, hidden_act="silu"),
    "dinov3_vitb16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "dinov3_vitl16": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def model_class(model_type: str):
    """The transformers class for a config's ``model_type``."""
    from transformers import DINOv3ViTModel, Dinov2Model, Dinov2WithRegistersModel

    classes = {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel, "dinov3_vit": DINOv3ViTModel}
    if model_type not in classes:
        raise ModelNotFoundError(
            f"expected a DINOv2 or DINOv3 ViT model (model_type {', '.join(map(repr, classes))}), "
            f"got model_type {model_type!r}"
        )
    return classes[model_type]


def architecture_config(short_name: str):
    """A transformers config of the released model's true shape (random weights go in it)."""
    if short_name.removesuffix("_reg") not in ARCHITECTURES:
        raise ValueError(f"expected one of {', '.join(BACKBONES)}, got {short_name!r}")
    fields = dict(ARCHITECTURES[short_name.removesuffix("_reg")])
    if short_name.startswith("dinov3"):
        from transformers import DINOv3ViTConfig

        return DINOv3ViTConfig(patch_size=16, num_register_tokens=4, layerscale_value=1.0, rope_theta=100.0,
                               key_bias=False, **fields)
    from transformers import Dinov2Config, Dinov2WithRegistersConfig

    if short_name.endswith("_reg"):
        return Dinov2WithRegistersConfig(num_register_tokens=4, patch_size=14, image_size=518, **fields)
    return Dinov2Config(patch_size=14, image_size=518, **fields)
