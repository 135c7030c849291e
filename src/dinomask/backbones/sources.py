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
from dinomask.backbones.weights import (
    check_config,
    check_config_file,
    check_declared_sizes,
    check_loaded,
    check_zip_budget,
)
from dinomask.errors import DinomaskError, ModelNotFoundError

#: Files of a model folder that make up its weights and architecture (they key the fingerprint cache).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".json")


def read_norm(directory: Path) -> tuple[tuple, tuple]:
    """Mean and std from ``preprocessor_config.json`` beside the weights, else ImageNet's.

    Raises:
        ModelNotFoundError: the file is there but is not 3 finite means and 3 positive stds.
    """
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        mean, std = data.get("image_mean"), data.get("image_std")
        if not (mean and std):
            return IMAGENET_MEAN, IMAGENET_STD
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (ValueError, TypeError, AttributeError, RecursionError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(f"{path} is not a readable preprocessor config: {exc.__class__.__name__}: {exc}") from None
    if len(mean) != 3 or len(std) != 3 or not all(abs(v) < 1e3 for v in mean) or not all(0 < v < 1e3 for v in std):
        raise ModelNotFoundError(f"{path}: expected image_mean and image_std of 3 values (std > 0), got {mean} and {std}")
    return mean, std


def missing_model_message(source: str, hub_id: str | None, detail: str) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    lines = [f"Could not load the DINOv2/DINOv3 model {source!r}: {detail}"]
    if hub_id is not None:
        lines += [
            f"Looked for the Hugging Face model {hub_id!r} in the cache {HF_HUB_CACHE}"
            + (" (HF_HUB_OFFLINE=1, so the hub was not asked)." if os.environ.get("HF_HUB_OFFLINE") == "1" else "."),
            "Fix it with one of:",
            f"  dinomask download {source}        # on a machine with internet, then copy HF_HOME across",
            "  --model /path/to/dir               # a directory written by save_pretrained (or DINOMASK_MODEL=/path/to/dir)",
            "  --model /path/to/dinov2_vits14_pretrain.pth  # Meta's official checkpoint",
            "  HF_HUB_OFFLINE=1                   # use the cache only, without asking the hub",
            "  dinomask random-model DIR && --model DIR  # to try the pipeline: RANDOM weights, meaningless masks",
        ]
    else:
        lines += [
            "Expected a directory written by save_pretrained (config.json + weights), a .safetensors "
            "file, a Meta .pth checkpoint, a Hugging Face id, or one of: " + ", ".join(BACKBONES),
        ]
    return "\n".join(lines)


def _read_state(path: Path) -> dict:
    """A checkpoint file -> ``{name: tensor}``, within a budget set before reading."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")  # the header is checked against the file's size first
    elif path.suffix in (".pth", ".pt", ".bin"):
        # torch writes its zip uncompressed: members that would inflate past the file are a bomb
        check_zip_budget(path, path.stat().st_size + 2**20, "checkpoint")
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
    state = unwrap_meta(state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelNotFoundError(f"{path} holds a {type(state).__name__}, not a state dict of named tensors")
    check_declared_sizes(state, path, 2 * path.stat().st_size + 2**20)
    return state


def _load_file(path: Path):
    state = _read_state(path)
    if is_meta_state_dict(state):
        return meta_to_transformers(state)
    if is_meta_v3_state_dict(state):
        return meta_v3_to_transformers(state)
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{path} holds Hugging Face-layout weights but there is no config.json beside it; "
            "pass the directory written by save_pretrained instead"
        )
    from transformers import AutoConfig

    check_config_file(config_path)
    config = AutoConfig.from_pretrained(str(path.parent))
    check_config(config, str(config_path))
    model = model_class(config.model_type)(config)
    result = model.load_state_dict(_to_model_layout(state, model), strict=False)
    check_loaded(str(path), result.missing_keys, result.unexpected_keys)
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
    """A save_pretrained folder or hub id -> model; sizes checked before it is built, every weight
    loaded (missing, unexpected or reshaped weights are refused, never left random)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    check_config(config, f"{source} (config.json)")
    model, info = model_class(config.model_type).from_pretrained(
        source, config=config, local_files_only=local_only, output_loading_info=True)
    check_loaded(source, info.get("missing_keys", ()), info.get("unexpected_keys", ()), info.get("mismatched_keys", ()))
    return model


def load_model(source: str):
    """Find and build the model.

    Returns:
        ``(model, norm_dir, files)``: the model, the folder that may hold preprocessing
        settings, and the files its weights and architecture were read from.

    Raises:
        ModelNotFoundError: not found, or found but not a usable checkpoint; the message names
            the file and what is wrong with it (never a traceback of the converter).
    """
    try:
        path = Path(os.path.expanduser(source))
        is_file, is_dir = path.is_file(), path.is_dir()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
        raise ModelNotFoundError(missing_model_message(source[:200], None, f"not a usable path ({exc})")) from None
    if is_file or is_dir:
        try:
            return _load_local(source, path, is_file)
        except DinomaskError as exc:
            if str(path) in str(exc) or source in str(exc):
                raise
            raise ModelNotFoundError(f"{path}: {exc}") from None
        except MemoryError:
            raise ModelNotFoundError(f"{path}: not enough memory to load this model") from None
        except Exception as exc:  # a damaged or foreign file: transformers, torch and safetensors raise many types
            detail = str(exc).splitlines()[0][:300] if str(exc) else ""
            raise ModelNotFoundError(
                f"{path} is not a usable DINOv2/DINOv3 checkpoint: {exc.__class__.__name__}: {detail}"
            ) from None
    return _load_remote(source, path)


def _folder_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES]


def _load_local(source: str, path: Path, is_file: bool):
    if is_file:
        model = _load_file(path)
        files = [path] + ([path.parent / "config.json"] if (path.parent / "config.json").is_file() else [])
        return model, path.parent, files
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            missing_model_message(source, None, f"the directory {path} has no config.json")
        )
    check_config_file(path / "config.json")
    try:
        model = _load_pretrained(str(path), local_only=True)
    except OSError as exc:
        raise ModelNotFoundError(missing_model_message(source, None, str(exc).splitlines()[0])) from None
    return model, path, _folder_files(path)


def _load_remote(source: str, path: Path):
    """A short name or hub id (the cache first); returns ``(model, norm_dir, files)``."""
    if source.endswith((".pth", ".pt", ".safetensors", ".bin")) or source.startswith((".", "/", "~")):
        raise ModelNotFoundError(missing_model_message(source, None, f"no such file or directory: {path}"))
    hub_id = BACKBONES.get(source, source)
    model = _load_from_hub(source, hub_id)
    norm_dir = _cached_snapshot_dir(hub_id)
    return model, norm_dir, _folder_files(norm_dir) if norm_dir is not None else []


#: How long the hub's host may take to accept a connection before it counts as unreachable.
HUB_PROBE_SECONDS = 2.0


def hub_unreachable(timeout_s: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub cannot be reached (its endpoint refuses a TCP connection, its name
    does not resolve, or neither answers within ``timeout_s``), or None when it answers. Asked
    before a download, so that a machine without the hub fails in seconds, not after
    huggingface_hub's retries (five 'Retrying in 8s', about 30 s)."""
    import socket
    import threading
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:  # in a thread: a name lookup has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port}: {exc.strerror or exc}")

    thread = threading.Thread(target=probe, name="dinomask-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {timeout_s:g} s"


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
    unreachable = hub_unreachable()
    if unreachable is not None:
        raise ModelNotFoundError(missing_model_message(
            source, hub_id, f"not cached, and the hub cannot be reached ({unreachable})")) from None
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
    unreachable = hub_unreachable()
    if unreachable is not None:  # at once, not after huggingface_hub's retries
        raise ModelNotFoundError(
            f"Could not download {hub_id!r}: the Hugging Face hub cannot be reached ({unreachable}).\n"
            "This needs internet access to huggingface.co. On a machine without it, download there and copy the "
            "cache folder (HF_HOME) or the returned directory across, then pass --model DIR; "
            "'dinomask random-model DIR' makes a random-weight model to try the pipeline (its masks mean nothing).")
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
