"""Backbones with RANDOM weights in the released architectures, for tests, demos and speed only."""

from __future__ import annotations

from pathlib import Path

from dinomask.atomic import make_readable
from dinomask.backbones.registry import architecture_config, model_class


def random_backbone_dir(
    directory: str | Path, *, hidden_size: int = 64, layers: int = 2, registers: int = 0,
    seed: int = 0, image_size: int = 518, arch: str | None = None, family: str = "dinov2",
) -> Path:
    """Write a DINOv2 or DINOv3 with random weights via ``save_pretrained``.

    Its features carry no meaning, so masks made with it say nothing about quality.

    Args:
        directory: where to write ``config.json`` and ``model.safetensors``.
        hidden_size: C; a multiple of 32 (a tiny model: 32-dim heads, MLP ratio 2).
        registers: DINOv2: 0 for ``Dinov2Model``, >0 for ``Dinov2WithRegistersModel``;
            DINOv3: register tokens (the released models have 4).
        arch: a short name (``dinov2_vits14_reg``, ``dinov3_vits16``, ...): the released
            model's true shape (ViT-S: 384 wide, 12 blocks, 6 heads, MLP ratio 4); overrides
            the sizes and ``family`` above.
        family: ``dinov2`` (patch 14) or ``dinov3`` (patch 16, RoPE) for a tiny model.
    """
    import torch
    from transformers import DINOv3ViTConfig, Dinov2Config, Dinov2WithRegistersConfig

    tiny = dict(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=max(1, hidden_size // 32))
    if arch is not None:
        config = architecture_config(arch)
    elif family == "dinov3":
        config = DINOv3ViTConfig(intermediate_size=2 * hidden_size, patch_size=16, num_register_tokens=registers,
                                 key_bias=False, layerscale_value=1.0, **tiny)
    elif family == "dinov2":
        common = dict(mlp_ratio=2, patch_size=14, image_size=image_size, **tiny)
        config = (Dinov2WithRegistersConfig(num_register_tokens=registers, **common) if registers
                  else Dinov2Config(**common))
    else:
        raise ValueError(f"family must be dinov2 or dinov3, got {family!r}")
    config.dinomask_random_weights = True  # reports read it back and say the numbers mean nothing
    torch.manual_seed(seed)
    model = model_class(config.model_type)(config)
    if config.model_type == "dinov3_vit":  # transformers initialises LayerScale to 1: make it count
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lambda1" in name:
                    parameter.uniform_(0.5, 1.5)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    for written in directory.iterdir():  # transformers writes the weights 0600 beside a 0644 config.json
        if written.is_file():
            make_readable(written)
    return directory
