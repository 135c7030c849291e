"""Where weights come from: a short name or hub id (cache first), a save_pretrained folder, a
``.safetensors`` file in either layout, or a Meta ``.pth``; and ``download`` for offline use."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dinomask.backbones.meta_v2 import hf_key_style, is_meta_state_dict, meta_to_transformers, unwrap_meta
from dinomask.backbones.meta_v3 import is_meta_v3_state_dict, meta_v3_to_transformers
from dinomask.backbones.registry import BACKBONES, model_class
from dinomask.backbones.spec import IMAGENET_MEAN, IMAGENET_STD
from dinomask.errors import ModelNotFoundError


def read_norm(directory: Path) -> tuple[tuple, tuple]:
    path = directory / "preprocessor_config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        mean, std = data.get("image_mean"), data.get("image_std")
        if mean and std:
            return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return IMAGENET_MEAN, IMAGENET_STD


def missing_model_message(source: str, hub_id: str | None, detail: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    lines = [f"Could not load the DINOv2/DINOv3 model {source!r}: {detail}"]
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
    if is_meta_state_dict(unwrap_meta(state)):
        return meta_to_transformers(state)
    if is_meta_v3_state_dict(unwrap_meta(state)):
        return meta_v3_to_transformers(state)
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{path} holds Hugging Face-layout weights but there is no config.json beside it; "
            "pass the directory written by save_pretrained instead"
        )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path.parent))
    model = model_class(config.model_type)(config)
    model.load_state_dict(_to_model_layout(state, model), strict=True)
    return model


_OLD_HF_NAMES = {
    "attention.attention.query": "q", "attention.attention.key": "k",
    "attention.attention.value": "v", "attention.output.dense": "o",
}


def _checkpoint_key(key: str, model_type: str) -> str:
    """A key as saved on the hub -> the model's own name, by transformers' own renaming rules
    (DINOv3's files say ``layer.N``, its module is ``model.layer.N``)."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    for rule in get_checkpoint_conversion_mapping(model_type) or []:
        key = rule.rename_source_key(key)[0]
    return key


def _to_model_layout(state: dict, model) -> dict:
    """Rename Hugging Face keys between the older (``attention.attention.query``,
    ``mlp.weights_in``) and newer (``attention.q_proj``, ``mlp.gate_proj``) layouts to
    whatever the installed transformers' model expects."""
    style = hf_key_style(model)
    out = {}
    for key, value in state.items():
        key = _checkpoint_key(key, model.config.model_type)
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
    return model_class(config.model_type).from_pretrained(source, local_files_only=local_only)


def load_model(source: str):
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
                missing_model_message(source, None, f"the directory {path} has no config.json")
            )
        try:
            model = _load_pretrained(str(path), local_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(missing_model_message(source, None, str(exc).splitlines()[0])) from None
        norm_dir = path
    elif source.endswith((".pth", ".pt", ".safetensors", ".bin")) or source.startswith((".", "/", "~")):
        raise ModelNotFoundError(missing_model_message(source, None, f"no such file or directory: {path}"))
    else:
        hub_id = BACKBONES.get(source, source)
        model = _load_from_hub(source, hub_id)
        norm_dir = _cached_snapshot_dir(hub_id)
    return model, norm_dir


def _load_from_hub(source: str, hub_id: str):
    from huggingface_hub.errors import HfHubHTTPError

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return _load_pretrained(hub_id, local_only=True)
    except (OSError, ValueError, HfHubHTTPError):
        if offline:
            raise ModelNotFoundError(
                missing_model_message(source, hub_id, "it is not in the local cache")
            ) from None
    try:
        return _load_pretrained(hub_id, local_only=False)
    except (OSError, ValueError, HfHubHTTPError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ModelNotFoundError(
            missing_model_message(source, hub_id, f"not cached, and the hub could not be reached ({detail})")
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
