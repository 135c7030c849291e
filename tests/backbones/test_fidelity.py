"""Same weights, same features as Meta's own DINOv2 code, at the sizes users run.

One random Meta-layout state dict is loaded into Meta's reference implementation (the
PyPI package ``dinov2``, facebookresearch's ``DinoVisionTransformer``) and into dinomask
through every source form; CLS and patch tokens (after the final norm) must agree within
1e-4 in fp32. Meta's code is the reference: transformers interpolates position
embeddings differently, and dinomask follows Meta (``backbones.meta_v2.meta_position_embeddings``).

That release of ``dinov2`` has no register tokens; for the registers models the test runs
Meta's forward as its later release does it (registers inserted after CLS, after the
position embeddings are added), with the same blocks and norm.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dinomask.backbones import load_backbone
from dinomask.backbones.meta_v2 import meta_position_embeddings

vision_transformer = pytest.importorskip(
    "dinov2.models.vision_transformer",
    reason="Meta's reference code (pip install --no-deps dinov2==0.0.1.dev2, done by scripts/setup.sh) is missing",
)

#: (height, width) in px: no interpolation, the 224 classic, the default preset's
#: aspect-kept grids (16:9 landscape and portrait at 1,400 tokens and at 518 short side),
#: and the 4:3 live grid.
SIZES = [(518, 518), (224, 224), (392, 700), (700, 392), (476, 840), (448, 602)]
TOLERANCE = 1e-4

#: True widths and head counts (ViT-S/14: 384, 6 heads; ViT-B/14: 768, 12 heads), MLP
#: ratio 4; fewer blocks than the released models keep the test in seconds (depth does
#: not touch the code paths that differ between implementations).
ARCHS = {
    "vits14": dict(embed_dim=384, num_heads=6),
    "vitb14": dict(embed_dim=768, num_heads=12),
    "swiglu": dict(embed_dim=384, num_heads=6, ffn_layer="swiglufused"),  # ViT-g's feed-forward at S width
}


def meta_model(arch: str, registers: int, seed: int = 0):
    """Meta's DinoVisionTransformer with random weights, every parameter perturbed
    (LayerScale included) so no weight sits at its initial value."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = vision_transformer.DinoVisionTransformer(
            img_size=518, patch_size=14, depth=3, mlp_ratio=4, init_values=1.0, block_chunks=0,
            block_fn=vision_transformer.partial(vision_transformer.Block, attn_class=vision_transformer.MemEffAttention),
            **ARCHS[arch],
        )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
        model.pos_embed.normal_(0, 0.5)  # a table with structure at every scale
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if registers:
        state["register_tokens"] = torch.randn(1, registers, model.embed_dim)
    return model.eval(), state


def meta_forward(model, state: dict, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's ``forward_features``: (CLS, patch tokens) after the final norm."""
    with torch.no_grad():
        x = model.prepare_tokens_with_masks(pixels)
        registers = state.get("register_tokens")
        if registers is not None:
            x = torch.cat((x[:, :1], registers.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        for block in model.blocks:
            x = block(x)
        x = model.norm(x)
    start = 1 + (0 if registers is None else registers.shape[1])
    return x[:, 0], x[:, start:]


def ours(backbone, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = backbone(pixels)
    return out.cls, out.patches.reshape(out.patches.shape[0], -1, out.patches.shape[-1])


def save_source(state: dict, tmp_path, form: str) -> str:
    """The same weights in the form a user has them."""
    if form == "meta-pth":
        path = tmp_path / "dinov2_pretrain.pth"
        torch.save(state, path)
        return str(path)
    if form == "meta-safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "dinov2_meta.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return str(path)
    from dinomask.backbones.meta_v2 import meta_to_transformers

    model = meta_to_transformers(state)
    folder = tmp_path / "hub-layout"
    model.save_pretrained(str(folder))
    if form == "hub-folder":
        return str(folder)
    if form == "hub-safetensors":
        return str(folder / "model.safetensors")
    raise ValueError(form)


@pytest.mark.parametrize("registers", [0, 4], ids=["plain", "reg4"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_features_equal_metas_code_at_every_size_the_presets_use(tmp_path, arch, registers):
    model, state = meta_model(arch, registers)
    backbone = load_backbone(save_source(state, tmp_path, "meta-pth"), device="cpu", dtype="float32", runtime="torch")
    for height, width in SIZES:
        pixels = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
        expected_cls, expected_patches = meta_forward(model, state, pixels)
        got_cls, got_patches = ours(backbone, pixels)
        assert (got_cls - expected_cls).abs().max() < TOLERANCE, (arch, registers, height, width)
        assert (got_patches - expected_patches).abs().max() < TOLERANCE, (arch, registers, height, width)


@pytest.mark.parametrize("form", ["meta-safetensors", "hub-folder", "hub-safetensors"])
def test_every_source_form_of_the_same_weights_gives_metas_features(tmp_path, form):
    model, state = meta_model("vits14", registers=4, seed=1)
    backbone = load_backbone(save_source(state, tmp_path, form), device="cpu", dtype="float32", runtime="torch")
    pixels = torch.randn(1, 3, 476, 840, generator=torch.Generator().manual_seed(3))
    expected_cls, expected_patches = meta_forward(model, state, pixels)
    got_cls, got_patches = ours(backbone, pixels)
    assert (got_cls - expected_cls).abs().max() < TOLERANCE
    assert (got_patches - expected_patches).abs().max() < TOLERANCE


def test_position_embeddings_are_metas_and_not_transformers(tmp_path):
    """The difference this file guards against: transformers resizes to ``size=(h, w)``;
    Meta's backbones use ``scale_factor=((h + 0.1) / M, (w + 0.1) / M)``, no antialias."""
    model, _ = meta_model("vits14", registers=0)
    for height, width in SIZES:
        x = torch.zeros(1, 1 + (height // 14) * (width // 14), model.embed_dim)
        expected = model.interpolate_pos_encoding(x, height, width)
        got = meta_position_embeddings(model.pos_embed.data, height // 14, width // 14)
        assert torch.equal(got, expected), (height, width)
    plain = torch.nn.functional.interpolate(
        model.pos_embed.data[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2), size=(16, 16), mode="bicubic")
    meta = meta_position_embeddings(model.pos_embed.data, 16, 16)[:, 1:].reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    assert (plain - meta).abs().max() > 1e-2  # the two rules really differ at 224 x 224


@pytest.mark.parametrize("registers", [0, 4], ids=["plain", "reg4"])
def test_onnx_export_agrees_with_the_torch_path_at_the_preset_sizes(tmp_path, registers):
    pytest.importorskip("onnxruntime")
    from dinomask.backbones import export_onnx
    from dinomask.backbones.onnx_runtime import load_onnx_file

    _, state = meta_model("vits14", registers)
    backbone = load_backbone(save_source(state, tmp_path, "meta-pth"), device="cpu", dtype="float32", runtime="torch")
    export_onnx(backbone, tmp_path / "m.onnx")
    onnx = load_onnx_file(tmp_path / "m.onnx")
    for height, width in SIZES:
        pixels = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(7))
        expected_cls, expected_patches = ours(backbone, pixels)
        got_cls, got_patches = ours(onnx, pixels)
        assert (got_cls - expected_cls).abs().max() < TOLERANCE, (height, width)
        assert (got_patches - expected_patches).abs().max() < TOLERANCE, (height, width)
