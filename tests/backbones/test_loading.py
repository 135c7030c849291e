from __future__ import annotations

import numpy as np
import pytest
import torch

from dinomask.backbones import BACKBONES, load_backbone, random_backbone_dir
from dinomask.backbones.devices import resolve_dtype
from dinomask.backbones.meta_v2 import meta_to_transformers, use_meta_position_embeddings
from dinomask.errors import ModelNotFoundError


def hf_to_meta(model) -> dict:
    """The inverse of the conversion under test: transformers layout -> Meta's layout."""
    sd = model.state_dict()
    cfg = model.config
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "mask_token": sd["embeddings.mask_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    if "embeddings.register_tokens" in sd:
        out["register_tokens"] = sd["embeddings.register_tokens"]
    q_name = "attention.q_proj" if "encoder.layer.0.attention.q_proj.weight" in sd else "attention.attention.query"
    names = {
        "attention.q_proj": ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
        "attention.attention.query": ("attention.attention.query", "attention.attention.key",
                                      "attention.attention.value", "attention.output.dense"),
    }[q_name]
    for i in range(cfg.num_hidden_layers):
        h, m = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("norm1", "norm2"):
            for t in ("weight", "bias"):
                out[f"{m}{part}.{t}"] = sd[f"{h}{part}.{t}"]
        for t in ("weight", "bias"):
            out[f"{m}attn.qkv.{t}"] = torch.cat([sd[f"{h}{n}.{t}"] for n in names[:3]])
            out[f"{m}attn.proj.{t}"] = sd[f"{h}{names[3]}.{t}"]
            if cfg.use_swiglu_ffn:
                out[f"{m}mlp.w12.{t}"] = torch.cat([sd[f"{h}mlp.gate_proj.{t}"], sd[f"{h}mlp.up_proj.{t}"]])
                out[f"{m}mlp.w3.{t}"] = sd[f"{h}mlp.down_proj.{t}"]
            else:
                out[f"{m}mlp.fc1.{t}"] = sd[f"{h}mlp.fc1.{t}"]
                out[f"{m}mlp.fc2.{t}"] = sd[f"{h}mlp.fc2.{t}"]
        out[f"{m}ls1.gamma"] = sd[f"{h}layer_scale1.lambda1"]
        out[f"{m}ls2.gamma"] = sd[f"{h}layer_scale2.lambda1"]
    return out


def test_short_names_cover_all_sizes_with_and_without_registers():
    for size in ("s", "b", "l", "g"):
        assert f"dinov2_vit{size}14" in BACKBONES
        assert "with-registers" in BACKBONES[f"dinov2_vit{size}14_reg"]


@pytest.mark.parametrize("registers", [0, 4])
def test_save_pretrained_dir_loads_with_its_own_spec_and_grid(tmp_path, registers):
    path = random_backbone_dir(tmp_path / "m", hidden_size=64, layers=1, registers=registers)
    backbone = load_backbone(str(path), device="cpu", runtime="torch", dtype="float32")
    assert backbone.spec.patch_size == 14
    assert backbone.spec.feature_dim == 64
    assert backbone.spec.num_register_tokens == registers
    out = backbone(torch.zeros(2, 3, 518, 518))
    assert out.cls.shape == (2, 64)
    assert out.patches.shape == (2, 37, 37, 64)
    out = backbone(torch.zeros(1, 3, 224, 700))
    assert out.patches.shape == (1, 16, 50, 64)


def test_input_not_a_multiple_of_the_patch_is_refused(tiny_backbone):
    with pytest.raises(ValueError, match="multiples of the patch size 14"):
        tiny_backbone(torch.zeros(1, 3, 520, 518))


def test_same_weights_same_fingerprint_other_weights_other_fingerprint(tmp_path):
    a = load_backbone(str(random_backbone_dir(tmp_path / "a", seed=0, layers=1)), device="cpu", runtime="torch", dtype="float32")
    b = load_backbone(str(random_backbone_dir(tmp_path / "b", seed=0, layers=1)), device="cpu", runtime="torch", dtype="float32")
    c = load_backbone(str(random_backbone_dir(tmp_path / "c", seed=1, layers=1)), device="cpu", runtime="torch", dtype="float32")
    assert a.spec.fingerprint == b.spec.fingerprint != c.spec.fingerprint


def test_safetensors_file_with_config_beside_it_loads(tiny_model_dir, tiny_backbone):
    backbone = load_backbone(str(tiny_model_dir / "model.safetensors"), device="cpu", runtime="torch", dtype="float32")
    x = torch.randn(1, 3, 56, 84)
    assert torch.allclose(backbone(x).patches, tiny_backbone(x).patches, atol=1e-5)


@pytest.mark.parametrize("registers,swiglu", [(0, False), (4, False), (0, True)])
def test_meta_checkpoint_converts_to_the_same_network(tmp_path, registers, swiglu):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    common = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                  patch_size=14, image_size=518, use_swiglu_ffn=swiglu)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **common))
    else:
        model = Dinov2Model(Dinov2Config(**common))
    # layer scales start at 1.0; perturb them so a wrong mapping cannot hide
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / ("dinov2_vitb14_reg4_pretrain.pth" if registers else "dinov2_vitb14_pretrain.pth")
    torch.save(hf_to_meta(model.eval()), path)
    loaded = load_backbone(str(path), device="cpu", runtime="torch", dtype="float32")
    x = torch.randn(1, 3, 98, 126)
    use_meta_position_embeddings(model.embeddings)  # the interpolation rule is tested in tests/backbones/test_fidelity.py
    with torch.no_grad():
        expected = model(pixel_values=x).last_hidden_state
    got = loaded(x)
    assert loaded.spec.num_register_tokens == registers
    assert torch.allclose(got.cls, expected[:, 0], atol=1e-4)
    assert torch.allclose(got.patches.reshape(1, -1, 128), expected[:, 1 + registers:], atol=1e-4)


def test_meta_checkpoint_wrapped_in_teacher_with_backbone_prefix(tmp_path, tiny_backbone):
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, mlp_ratio=2,
                                     image_size=518)).eval()
    state = {"teacher": {f"backbone.{k}": v for k, v in hf_to_meta(model).items()}}
    converted = meta_to_transformers(state)
    assert converted.config.num_hidden_layers == 1


def test_missing_hub_model_offline_says_where_it_looked_and_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        load_backbone("dinov2_vits14", device="cpu", runtime="torch", dtype="float32")
    message = str(info.value)
    assert "facebook/dinov2-small" in message
    assert "dinomask download dinov2_vits14" in message
    assert "--model" in message


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda d: str(d / "nope.pth"), "no such file"),
        (lambda d: str(d), "has no config.json"),
        (lambda d: (d / "broken.pth").write_bytes(b"not a checkpoint") and str(d / "broken.pth"), "could not read"),
        (lambda d: (d / "weights.npy").write_bytes(b"x") and str(d / "weights.npy"), "expected a .safetensors"),
    ],
)
def test_bad_local_model_paths_give_one_clear_error(tmp_path, make, match):
    with pytest.raises(ModelNotFoundError, match=match):
        load_backbone(make(tmp_path), device="cpu", runtime="torch", dtype="float32")


def test_dtype_choices(tiny_backbone):
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        resolve_dtype("float16", cpu)
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("int8", cpu)


def test_bf16_features_stay_faithful_to_fp32_on_a_real_image(tiny_model_dir, davis):
    from dinomask.features import extract_features
    from dinomask.preprocess import InputGeometry, load_image

    image = load_image(davis / "JPEGImages/480p/dog/00000.jpg")
    fp32 = load_backbone(str(tiny_model_dir), device="cpu", dtype="float32", runtime="torch")
    bf16 = load_backbone(str(tiny_model_dir), device="cpu", dtype="bfloat16", runtime="torch")
    geometry = InputGeometry(518)
    (a,) = extract_features(fp32, [image], geometry)
    (b,) = extract_features(bf16, [image], geometry)
    cosine = np.sum(a.patches * b.patches, axis=-1)
    assert cosine.min() >= 0.99


def _fake_hub_cache(cache, repo_id: str, model_dir) -> None:
    """Lay a saved model out as huggingface_hub's cache does (refs/main -> snapshots/<rev>/)."""
    import shutil

    folder = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    shutil.copytree(model_dir, folder / "snapshots" / revision)
    (folder / "snapshots" / revision / "preprocessor_config.json").write_text(
        '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}')


def test_offline_hub_cache_is_read_by_short_name_and_id(monkeypatch, tmp_path, tiny_reg_model_dir):
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "facebook/dinov2-with-registers-small", tiny_reg_model_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import transformers.utils.hub as hub_utils

    if hasattr(hub_utils, "TRANSFORMERS_CACHE"):
        monkeypatch.setattr(hub_utils, "TRANSFORMERS_CACHE", str(cache), raising=False)
    for source in ("dinov2_vits14_reg", "facebook/dinov2-with-registers-small"):
        try:
            backbone = load_backbone(source, device="cpu", runtime="torch", dtype="float32")
        except ModelNotFoundError as exc:  # some transformers versions fix the cache path at import
            pytest.skip(f"this transformers reads its cache path at import time: {exc}")
        assert backbone.spec.num_register_tokens == 4
        assert backbone.spec.mean == (0.5, 0.5, 0.5)  # preprocessing travels with the weights


def test_download_reports_where_it_put_the_model_or_why_it_could_not(monkeypatch, tmp_path, capsys):
    from dinomask.cli import main

    calls = []

    def fake_snapshot(repo_id, cache_dir=None, allow_patterns=None):
        calls.append((repo_id, cache_dir))
        return str(tmp_path / "snap")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    monkeypatch.setattr("dinomask.backbones.sources.hub_unreachable", lambda: None)  # the hub answers here
    assert main(["download", "dinov2_vitb14", "--cache-dir", str(tmp_path)]) == 0
    assert calls == [("facebook/dinov2-base", str(tmp_path))]
    assert "use it offline" in capsys.readouterr().out

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    assert main(["download", "dinov2_vitb14"]) == 2
    err = capsys.readouterr().err
    assert "Could not download 'facebook/dinov2-base'" in err and "HF_HOME" in err


def test_random_model_with_an_arch_has_the_released_shape(tmp_path):
    from transformers import AutoConfig

    from dinomask.cli import main

    assert main(["random-model", str(tmp_path / "s"), "--arch", "dinov2_vits14_reg"]) == 0
    config = AutoConfig.from_pretrained(tmp_path / "s")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.mlp_ratio,
            config.num_register_tokens) == (384, 12, 6, 4, 4)


def test_random_weights_are_recognised_by_marker_or_by_their_statistics(tmp_path, tiny_model_dir):
    """Reports warn when weights are random: ``random-model`` marks its config, and transformers'
    initialisation leaves every LayerScale at one constant, which training never does."""
    from transformers import Dinov2Config, Dinov2Model

    marked = load_backbone(str(tiny_model_dir), device="cpu", runtime="torch", dtype="float32")
    assert "random-model" in marked.random_weights
    Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2)).save_pretrained(
        tmp_path / "fresh")
    fresh = load_backbone(str(tmp_path / "fresh"), device="cpu", runtime="torch", dtype="float32")
    assert "LayerScale" in fresh.random_weights
    model = Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lambda1" in name:
                parameter.copy_(torch.linspace(0.01, 0.2, parameter.numel()))  # per-channel scales, as trained
    model.save_pretrained(tmp_path / "trained-like")
    assert load_backbone(str(tmp_path / "trained-like"), device="cpu", runtime="torch").random_weights is None
    assert load_backbone(str(tiny_model_dir), device="cpu").random_weights  # carried to the ONNX fast path


def test_a_fine_tune_with_a_frozen_patch_embedding_has_its_own_fingerprint(tmp_path):
    """Issue 21: only the patch embedding was hashed, so a fine-tune that kept it shared the
    original's fingerprint (and its cached ONNX export, and its references)."""
    from transformers import AutoModel

    original = random_backbone_dir(tmp_path / "original", seed=0, layers=1)
    model = AutoModel.from_pretrained(str(original))
    with torch.no_grad():
        model.encoder.layer[0].mlp.fc1.weight.add_(0.01)  # the encoder changes, the patch embedding does not
    model.save_pretrained(str(tmp_path / "tuned"))
    a = load_backbone(str(original), device="cpu", runtime="torch", dtype="float32")
    b = load_backbone(str(tmp_path / "tuned"), device="cpu", runtime="torch", dtype="float32")
    assert a.spec.fingerprint != b.spec.fingerprint


def test_the_fingerprint_is_hashed_once_per_file_state(tmp_path, monkeypatch):
    """Cached by the files' paths, sizes and mtimes: a second load does not hash; a changed file does."""
    import os

    from dinomask.backbones import weights

    path = random_backbone_dir(tmp_path / "m", seed=0, layers=1)
    first = load_backbone(str(path), device="cpu", runtime="torch", dtype="float32").spec.fingerprint
    hashed = []
    original_digest = weights.hashlib.sha256
    monkeypatch.setattr(weights.hashlib, "sha256", lambda *a: hashed.append(1) or original_digest(*a))
    assert load_backbone(str(path), device="cpu", runtime="torch", dtype="float32").spec.fingerprint == first
    assert len(hashed) == 1  # the cache key alone, no weights
    stat = (path / "model.safetensors").stat()
    os.utime(path / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_backbone(str(path), device="cpu", runtime="torch", dtype="float32").spec.fingerprint == first
    assert len(hashed) == 3  # key, then the weights hashed again
