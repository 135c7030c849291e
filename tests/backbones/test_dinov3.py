"""DINOv3 ViT backbones (patch 16, 4 registers, RoPE): every source form and both runtimes give
transformers' ``DINOv3ViTModel`` features, and the CLI runs end to end on a DINOv3 folder.

Meta's own DINOv3 code is not on PyPI (and timm cannot be imported here: see the README),
so the yardstick is transformers' port. A Meta-layout state dict is made from a random
transformers model by the inverse of the conversion (written here, from Meta's key names),
loaded back through dinomask, and must give the same features within 1e-4 in fp32.
"""

from __future__ import annotations

import pytest
import torch

from dinomask.backbones import load_backbone
from dinomask.backbones.registry import architecture_config
from dinomask.cli import main

#: 224 square, the 37 x 37 grid at patch 16, and the default token budget's 16:9 grids both ways.
SIZES = [(224, 224), (592, 592), (448, 800), (800, 448)]
TOLERANCE = 1e-4


def tiny_dinov3(gated: bool = False, seed: int = 0, width: int = 384):
    """A random DINOv3ViTModel at a true width (ViT-S: 384, 6 heads; ViT-B: 768, 12 heads; MLP
    ratio 4), 3 blocks, every weight perturbed."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(hidden_size=width, num_hidden_layers=3, num_attention_heads=width // 64,
                             intermediate_size=4 * width,
                             patch_size=16, num_register_tokens=4, key_bias=False, layerscale_value=1.0,
                             use_gated_mlp=gated, hidden_act="silu" if gated else "gelu")
    torch.manual_seed(seed)
    model = DINOv3ViTModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def to_meta(model) -> dict:
    """transformers' DINOv3 layout -> Meta's (facebookresearch/dinov3 key names)."""
    sd, cfg = model.state_dict(), model.config
    dim, head_dim = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "storage_tokens": sd["embeddings.register_tokens"],
        "mask_token": sd["embeddings.mask_token"].reshape(1, dim),
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"],
        "rope_embed.periods": cfg.rope_theta ** (4 * torch.arange(head_dim // 4).float() / head_dim),
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
    }
    mlp = {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"} if cfg.use_gated_mlp else {"up_proj": "fc1", "down_proj": "fc2"}
    for i in range(cfg.num_hidden_layers):
        src, dst = f"model.layer.{i}.", f"blocks.{i}."
        for part in ("norm1", "norm2"):
            for t in ("weight", "bias"):
                out[f"{dst}{part}.{t}"] = sd[f"{src}{part}.{t}"]
        out[f"{dst}attn.qkv.weight"] = torch.cat([sd[f"{src}attention.{p}_proj.weight"] for p in "qkv"])
        key_bias = torch.randn(dim)  # present in Meta's file, masked to zero by bias_mask
        out[f"{dst}attn.qkv.bias"] = torch.cat([sd[f"{src}attention.q_proj.bias"], key_bias, sd[f"{src}attention.v_proj.bias"]])
        out[f"{dst}attn.qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
        for t in ("weight", "bias"):
            out[f"{dst}attn.proj.{t}"] = sd[f"{src}attention.o_proj.{t}"]
            for hf, meta in mlp.items():
                out[f"{dst}mlp.{meta}.{t}"] = sd[f"{src}mlp.{hf}.{t}"]
        out[f"{dst}ls1.gamma"] = sd[f"{src}layer_scale1.lambda1"]
        out[f"{dst}ls2.gamma"] = sd[f"{src}layer_scale2.lambda1"]
    return {k: v.clone() for k, v in out.items()}


def save_source(model, tmp_path, form: str) -> str:
    from safetensors.torch import save_file

    if form == "hub-folder":
        model.save_pretrained(str(tmp_path / "hub"))
        return str(tmp_path / "hub")
    if form == "hub-safetensors":
        model.save_pretrained(str(tmp_path / "hub"))
        return str(tmp_path / "hub" / "model.safetensors")
    if form == "meta-safetensors":
        save_file({k: v.contiguous() for k, v in to_meta(model).items()}, str(tmp_path / "meta.safetensors"))
        return str(tmp_path / "meta.safetensors")
    torch.save({"teacher": {f"backbone.{k}": v for k, v in to_meta(model).items()}}, tmp_path / "dinov3_vits16_pretrain.pth")
    return str(tmp_path / "dinov3_vits16_pretrain.pth")


def reference_features(model, pixels):
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    return hidden[:, 0], hidden[:, 5:]


def ours(backbone, pixels):
    features = backbone(pixels)
    return features.cls, features.patches.reshape(pixels.shape[0], -1, features.patches.shape[-1])


@pytest.mark.parametrize("gated", [False, True], ids=["vits16", "vits16plus-swiglu"])
@pytest.mark.parametrize("form", ["meta-pth", "meta-safetensors", "hub-folder", "hub-safetensors"])
def test_every_source_form_gives_transformers_features_at_every_size(tmp_path, form, gated):
    model = tiny_dinov3(gated)
    backbone = load_backbone(save_source(model, tmp_path, form), device="cpu", runtime="torch", dtype="float32")
    assert backbone.spec.patch_size == 16 and backbone.spec.num_register_tokens == 4
    assert backbone.spec.family == "dinov3"
    torch.manual_seed(1)
    for height, width in SIZES:
        pixels = torch.randn(1, 3, height, width)
        (cls, patches), (our_cls, our_patches) = reference_features(model, pixels), ours(backbone, pixels)
        assert our_patches.shape[1] == (height // 16) * (width // 16)
        assert (cls - our_cls).abs().max() < TOLERANCE, (form, height, width)
        assert (patches - our_patches).abs().max() < TOLERANCE, (form, height, width)


def test_the_same_weights_have_the_same_fingerprint_in_every_form(tmp_path):
    model = tiny_dinov3()
    prints = {form: load_backbone(save_source(model, tmp_path / form, form), device="cpu", runtime="torch",
                                  dtype="float32").spec.fingerprint
              for form in ("meta-pth", "hub-folder")
              if (tmp_path / form).mkdir() is None}
    assert len(set(prints.values())) == 1  # a reference made with one loads with the other


def test_the_onnx_export_agrees_with_torch_at_every_size(tmp_path):
    pytest.importorskip("onnxruntime")
    from dinomask.backbones import export_onnx
    from dinomask.backbones.onnx_runtime import load_onnx_file

    model = tiny_dinov3()
    backbone = load_backbone(save_source(model, tmp_path, "hub-folder"), device="cpu", runtime="torch", dtype="float32")
    export_onnx(backbone, tmp_path / "v3.onnx")
    onnx = load_onnx_file(tmp_path / "v3.onnx")
    torch.manual_seed(2)
    for height, width in SIZES:
        pixels = torch.randn(2, 3, height, width)
        (cls, patches), (onnx_cls, onnx_patches) = ours(backbone, pixels), ours(onnx, pixels)
        assert (cls - onnx_cls).abs().max() < TOLERANCE and (patches - onnx_patches).abs().max() < TOLERANCE, (height, width)


def test_a_meta_checkpoint_with_an_unmasked_key_bias_is_refused(tmp_path):
    from dinomask.errors import ModelNotFoundError

    state = to_meta(tiny_dinov3())
    del state["blocks.0.attn.qkv.bias_mask"]  # the key bias now counts, and transformers has none
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ModelNotFoundError, match="key bias"):
        load_backbone(str(tmp_path / "odd.pth"), device="cpu", runtime="torch")


def test_true_shapes_of_the_released_dinov3_models():
    small = architecture_config("dinov3_vits16")
    assert (small.hidden_size, small.num_attention_heads, small.intermediate_size, small.patch_size,
            small.num_register_tokens) == (384, 6, 1536, 16, 4)
    assert architecture_config("dinov3_vits16plus").use_gated_mlp
    assert architecture_config("dinov3_vitl16").num_hidden_layers == 24


def test_reference_and_remove_run_end_to_end_on_a_dinov3_folder(tmp_path, davis, capsys):
    model_dir = tmp_path / "v3"
    assert main(["random-model", str(model_dir), "--family", "dinov3", "--registers", "4", "--hidden-size", "64"]) == 0
    ref = tmp_path / "dog.npz"
    assert main(["reference", str(davis / "JPEGImages/480p/dog/00000.jpg"), "--mask",
                 str(davis / "Annotations/480p/dog/00000.png"), "-o", str(ref), "--model", str(model_dir)]) == 0
    out = tmp_path / "out"
    for runtime in ("torch", "auto"):
        assert main(["remove", str(davis / "JPEGImages/480p/dog"), "-r", str(ref), "-o", str(out / runtime), "-q",
                     "--runtime", runtime]) == 0
        assert len(list((out / runtime).glob("*.png"))) == len(list((davis / "JPEGImages/480p/dog").glob("*.jpg")))
    from dinomask.reference import Reference

    spec = Reference.load(ref).backbone
    assert (spec.patch_size, spec.family, spec.num_register_tokens) == (16, "dinov3", 4)
