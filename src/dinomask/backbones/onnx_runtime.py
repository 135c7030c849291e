"""The CPU fast path: the same DINOv2 or DINOv3 exported to ONNX and run by ONNX Runtime, optionally
with int8 dynamic quantisation of its matrix weights.

Measured on the 2-core AVX-512 build machine (``benchmarks/backbone_speed.py``), ViT-S/14
at 518 px: torch fp32 eager ~0.49 s, torch bf16 ~0.29 s, ONNX Runtime fp32 ~0.27 s,
ONNX Runtime int8 ~0.16 s per frame.

Every export is checked before it is used: its features are compared with the fp32
torch model's on a fixed test image, and an export whose per-patch cosine similarity
falls below :data:`MIN_FIDELITY` is refused (``auto`` then falls back to fp32 ONNX).
Exports are cached by the weights' fingerprint in ``$DINOMASK_CACHE`` (default
``~/.cache/dinomask``) and written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dinomask.atomic import make_readable
from dinomask.backbones.spec import BackboneFeatures, BackboneSpec
from dinomask.backbones.torch_runtime import Backbone
from dinomask.backbones.weights import cache_dir, check_config
from dinomask.errors import DinomaskError, ModelNotFoundError, RunCancelled

#: Lowest acceptable cosine similarity between fast-path and fp32 features, per patch.
MIN_FIDELITY = 0.99
#: Models larger than this (bytes of fp32 weights) are not exported (ONNX's 2 GB protobuf limit).
MAX_EXPORT_BYTES = 1_800_000_000
#: A sidecar (``.json`` beside an export) larger than this is refused unread.
MAX_SIDECAR_BYTES = 1_000_000


def fp32_bytes(model) -> int:
    """Bytes the model's weights take in fp32 (what one exported ONNX file holds)."""
    return sum(p.numel() * 4 for p in model.parameters())


@dataclass(frozen=True)
class ExportInfo:
    """What travels beside an exported ``.onnx`` file (as ``.json``)."""

    spec: dict
    quantization: str
    fidelity_min_cosine: float
    fidelity_mean_cosine: float
    exported_seconds: float
    config: dict


def test_image(size: int = 518, seed: int = 0) -> np.ndarray:
    """A fixed RGB uint8 image with smooth regions, edges and texture (not a real photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(5 * y), 0.3 + 0.5 * x * y], axis=2)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.1, 0.9, 2).tolist() + [rng.uniform(0.05, 0.2)]
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def features_fidelity(a: BackboneFeatures, b: BackboneFeatures) -> tuple[float, float]:
    """Min and mean cosine similarity between two sets of patch features, per patch."""
    pa = a.patches.float().numpy().reshape(-1, a.patches.shape[-1])
    pb = b.patches.float().numpy().reshape(-1, b.patches.shape[-1])
    cos = np.sum(pa * pb, axis=1) / np.maximum(np.linalg.norm(pa, axis=1) * np.linalg.norm(pb, axis=1), 1e-12)
    return float(cos.min()), float(cos.mean())


def export_onnx(backbone: Backbone, path: str | Path, *, int8: bool = False) -> ExportInfo:
    """Export a torch :class:`Backbone` to ONNX (dynamic batch, height and width).

    Args:
        backbone: a torch backbone (fp32 weights; it is run in fp32 for the export).
        path: the ``.onnx`` file to write; an ``ExportInfo`` ``.json`` goes beside it.
        int8: quantise matrix weights to int8 (ONNX Runtime dynamic quantisation).

    Raises:
        ModelNotFoundError: onnx/onnxruntime are missing or the model is too large.
    """
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ModelNotFoundError(
            "the ONNX fast path needs onnx and onnxruntime: pip install 'dinomask[onnx]'"
        ) from None
    model = backbone.model
    size = fp32_bytes(model)
    if size > MAX_EXPORT_BYTES:
        raise ModelNotFoundError(
            f"{backbone.spec.name} has {size / 1e9:.1f} GB of fp32 weights, over the {MAX_EXPORT_BYTES / 1e9:.1f} GB "
            "that one ONNX file holds; use --runtime torch"
        )

    dinov3 = backbone.spec.family == "dinov3"

    class Wrapper(torch.nn.Module):
        """Positions come in as inputs, made outside the graph by the same code as the torch path:
        DINOv2's interpolated table (``meta_v2.meta_position_embeddings``), DINOv3's RoPE cos and sin."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values, *positions):
            if dinov3:
                hidden = self.inner.embeddings(pixel_values)
                hidden = self.inner.model(hidden, position_embeddings=positions).last_hidden_state
                return self.inner.norm(hidden)
            embeddings = self.inner.embeddings
            interpolate = embeddings.interpolate_pos_encoding
            embeddings.interpolate_pos_encoding = lambda tokens, height, width: positions[0]
            try:
                return self.inner(pixel_values=pixel_values).last_hidden_state
            finally:
                embeddings.interpolate_pos_encoding = interpolate

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    side = backbone.spec.patch_size * 16
    example = torch.zeros(1, 3, side, side)
    config = {"model_type": model.config.model_type, **_config_fields(model.config)}
    positions = PositionInputs(config, None if dinov3 else model.embeddings.position_embeddings.detach().float())
    example_positions = tuple(torch.from_numpy(v) for v in positions(side, side).values())
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        plain = Path(tmp) / "fp32.onnx"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks; shapes stay dynamic
            torch.onnx.export(
                Wrapper(model.float().cpu()).eval(), (example, *example_positions), str(plain),
                input_names=["pixel_values", *positions.names], output_names=["hidden"], opset_version=17,
                dynamo=False,
                dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"},
                              **{name: positions.dynamic_axes for name in positions.names},
                              "hidden": {0: "batch", 1: "tokens"}},
            )
        model.to(backbone.device)
        final = Path(tmp) / "final.onnx"
        if int8:
            import logging

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # onnxruntime logs a generic pre-processing hint on the root logger
            try:
                quantize_dynamic(str(plain), str(final), weight_type=QuantType.QInt8)
            finally:
                root.setLevel(level)
        else:
            plain.replace(final)
        from safetensors.torch import save_file

        embeddings = Path(tmp) / "embeddings.safetensors"
        save_file({k: v.detach().float().cpu().contiguous() for k, v in model.embeddings.state_dict().items()},
                  str(embeddings))
        onnx_backbone = OnnxBackbone(final, backbone.spec, "int8" if int8 else "fp32", config, embeddings)
        minimum, mean = measure_fidelity(backbone, onnx_backbone)
        info = ExportInfo(asdict(backbone.spec), "int8" if int8 else "fp32", minimum, mean,
                          time.perf_counter() - started, config)
        for written in (embeddings, final):  # files made in a 0700 temporary folder: readable as open() makes them
            make_readable(written)
        os.replace(embeddings, _embeddings_path(path))
        os.replace(final, path)
    _write_info(path, info)
    return info


def _config_fields(config) -> dict:
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio", "patch_size", "image_size",
            "num_register_tokens", "use_swiglu_ffn", "layer_norm_eps", "intermediate_size", "rope_theta",
            "use_gated_mlp", "hidden_act", "key_bias", "query_bias", "value_bias", "proj_bias", "mlp_bias")
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}


def _embeddings_path(path: Path) -> Path:
    return path.with_suffix(".embeddings.safetensors")


def _position_table(config: dict, weights: Path):
    """The export's DINOv2 position table (``1 x (1 + n) x C`` float32 tensor) from its embeddings
    file, checked against the config: all the ONNX runtime needs of the embeddings, interpolated by
    :func:`~dinomask.backbones.meta_v2.meta_position_embeddings`, the function the torch model's
    embeddings use (no transformers import, no module built: a second ``remove`` starts sooner)."""
    import math

    from safetensors.torch import load_file

    table = load_file(str(weights)).get("position_embeddings")
    dim = config["hidden_size"]
    if table is None or table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != dim:
        shape = None if table is None else tuple(table.shape)
        raise ModelNotFoundError(f"{weights}: expected a position_embeddings table of 1 x (1 + n) x {dim}, got {shape}")
    side = math.isqrt(table.shape[1] - 1)
    if side * side != table.shape[1] - 1:
        raise ModelNotFoundError(f"{weights}: the position table's {table.shape[1] - 1} positions are not a square grid")
    return table.float()


class PositionInputs:
    """The position inputs of an exported graph for one input size, cached per size.

    DINOv2: ``position_embeddings`` (``1 x (1 + h*w) x C``), interpolated as Meta's code does.
    DINOv3: ``rope_cos`` and ``rope_sin`` (``h*w x head_dim``) from transformers' own RoPE module.

    Args:
        config: the export's config fields (with ``model_type``).
        embeddings: DINOv2 only: the position table (``1 x (1 + n) x C``: the torch model's at
            export, :func:`_position_table` at run time), interpolated by
            :func:`~dinomask.backbones.meta_v2.meta_position_embeddings` as the torch model's
            embeddings do.
    """

    def __init__(self, config: dict, embeddings=None):
        self.config = config
        self.dinov3 = config["model_type"] == "dinov3_vit"
        self.names = ("rope_cos", "rope_sin") if self.dinov3 else ("position_embeddings",)
        self.dynamic_axes = {0: "patches"} if self.dinov3 else {1: "positions"}
        if self.dinov3:
            from transformers import DINOv3ViTConfig
            from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTRopePositionEmbedding

            fields = {k: v for k, v in config.items() if k != "model_type"}
            self.module = DINOv3ViTRopePositionEmbedding(DINOv3ViTConfig(**fields)).eval()
        else:
            self.module = embeddings
        self._cache: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def __call__(self, height: int, width: int) -> dict[str, np.ndarray]:
        import torch

        key = (height, width)
        if key not in self._cache:
            with torch.no_grad():
                if self.dinov3:
                    cos, sin = self.module(torch.zeros(1, 3, height, width))
                    values = (cos, sin)
                else:
                    from dinomask.backbones.meta_v2 import meta_position_embeddings

                    p = self.config["patch_size"]
                    values = (meta_position_embeddings(self.module, height // p, width // p),)
            self._cache[key] = {n: v.detach().float().numpy() for n, v in zip(self.names, values)}
        return self._cache[key]


def measure_fidelity(reference: Backbone, candidate, image: np.ndarray | None = None) -> tuple[float, float]:
    """Min and mean per-patch cosine between ``candidate`` and ``reference`` (run in fp32), on
    :func:`test_image` (37 x 37 patches) or ``image`` (cropped to whole patches)."""
    import torch

    p = reference.spec.patch_size
    image = test_image(37 * p) if image is None else image
    image = image[: image.shape[0] // p * p, : image.shape[1] // p * p]
    mean, std = np.asarray(reference.spec.mean), np.asarray(reference.spec.std)
    pixels = torch.from_numpy(((image / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)[None].copy())
    saved = reference.dtype
    reference.dtype = torch.float32
    try:
        expected = reference(pixels)
    finally:
        reference.dtype = saved
    return features_fidelity(expected, candidate(pixels))


def _write_info(path: Path, info: ExportInfo) -> None:
    sidecar = path.with_suffix(".json")
    tmp = sidecar.with_suffix(".json.part")
    tmp.write_text(json.dumps(asdict(info), indent=2))
    os.replace(tmp, sidecar)


def check_spec(spec: dict, config: dict) -> None:
    """A sidecar's spec within the bounds of any DINOv2/DINOv3 and consistent with its config:
    ``patch_size`` 5000 would make a 2.4 GB position table, a negative ``std`` or a one-value
    ``mean`` silently wrong inputs.

    Raises:
        ValueError: naming the field, what it must be and what it is.
    """
    from dinomask.backbones.weights import MAX_HIDDEN, MAX_PATCH, MAX_REGISTERS

    for name, low, high in (("patch_size", 1, MAX_PATCH), ("feature_dim", 1, MAX_HIDDEN),
                            ("num_register_tokens", 0, MAX_REGISTERS)):
        if not low <= spec[name] <= high:
            raise ValueError(f"spec.{name} must be in {low}..{high}, got {spec[name]}")
    for name in ("mean", "std"):
        values = spec[name]
        if len(values) != 3 or not all(np.isfinite(v) and 0 <= v <= 1 for v in values):
            raise ValueError(f"spec.{name} must be 3 numbers (R, G, B) in [0, 1], got {list(values)!r:.80}")
    if min(spec["std"]) <= 0:
        raise ValueError(f"spec.std must be above 0, got {list(spec['std'])}")
    if spec.get("family", "dinov2") not in ("dinov2", "dinov3"):
        raise ValueError(f"spec.family must be dinov2 or dinov3, got {spec.get('family')!r:.80}")
    for field, key in (("patch_size", "patch_size"), ("feature_dim", "hidden_size"),
                       ("num_register_tokens", "num_register_tokens")):
        if key in config and config[key] != spec[field]:
            raise ValueError(f"spec.{field} {spec[field]} differs from the config's {key} {config[key]!r:.80}")


def read_info(path: str | Path) -> ExportInfo:
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise ModelNotFoundError(
            f"{path} has no {sidecar.name} beside it; export ONNX models with 'dinomask export-onnx' so the "
            "preprocessing settings travel with them"
        )
    if sidecar.stat().st_size > MAX_SIDECAR_BYTES:
        raise ModelNotFoundError(f"{sidecar} is {sidecar.stat().st_size} bytes; a dinomask export's sidecar is a few KB")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        spec = dict(data["spec"])
        spec["mean"], spec["std"] = tuple(float(v) for v in spec["mean"]), tuple(float(v) for v in spec["std"])
        data["spec"] = spec
        info = ExportInfo(**data)
        BackboneSpec(**spec)
        check_config(SimpleNamespace(**info.config), str(sidecar))
        for name, kind in (("patch_size", int), ("feature_dim", int), ("num_register_tokens", int), ("fingerprint", str)):
            if not isinstance(spec[name], kind) or isinstance(spec[name], bool):
                raise TypeError(f"spec.{name} must be {kind.__name__}, got {spec[name]!r:.80}")
        check_spec(spec, info.config)
        if info.quantization not in ("fp32", "int8"):
            raise ValueError(f"quantization must be fp32 or int8, got {info.quantization!r}")
    except DinomaskError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(f"{sidecar} is not the sidecar 'dinomask export-onnx' writes: "
                                 f"{exc.__class__.__name__}: {exc}") from None
    return info


def usable_cores() -> int:
    """The cores this process may run on (its affinity: ``taskset`` and container limits count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(busy_wait: bool = True) -> int:
    """ONNX Runtime's intra-op threads: every usable core when the model runs alone; beside a
    loop (``busy_wait=False``: live's keys) one core fewer, at least one, so that the work every
    frame waits on (capture, optical flow, compositing, output) always has a core a key does not
    take. Measured on 2 cores (``benchmarks/live_camera.py --sizes 854x480 --schedules async``,
    davis-live, davis-motion, davis-train6): one key thread against two cut p95 latency from
    41/44/41 to 36/33/31 ms quiet and from 65/77/67 to 60/62/57 ms beside a busy core, the key
    itself barely slower (two threads fight the loop for the same two cores)."""
    cores = usable_cores()
    return cores if busy_wait else max(1, cores - 1)


class OnnxBackbone:
    """A DINOv2 run by ONNX Runtime on CPU, with the torch :class:`Backbone`'s interface.

    Args:
        path: an exported ``.onnx`` file.
        spec: the source weights' spec (its fingerprint stays, so references match).
        quantization: ``fp32`` or ``int8``.
        threads: ONNX Runtime intra-op threads (0 = ``$DINOMASK_THREADS``, else
            :func:`default_threads`).
        busy_wait: let idle ONNX Runtime threads spin (fastest when the model runs alone);
            False when other threads work beside it, as in the live loop, where spinning
            threads take the cores those need (measured: ``benchmarks/live_loop.py``), and
            where the model leaves those threads a core (:func:`default_threads`).
    """

    def __init__(self, path: str | Path, spec: BackboneSpec, quantization: str, config: dict,
                 embeddings: str | Path, threads: int = 0, busy_wait: bool = True):
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("DINOMASK_THREADS", 0)) or default_threads(busy_wait)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not busy_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = Path(path)
        self.spec = spec
        self.quantization = quantization
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.runtime = f"onnx-{quantization}"
        self.random_weights: str | None = None  # set by the loader from the source weights
        self.model = None
        dinov3 = config["model_type"] == "dinov3_vit"
        self._positions = PositionInputs(config, None if dinov3 else _position_table(config, Path(embeddings)))
        self.fidelity = float("nan")
        self._run = None  # the RunOptions of the run in progress (see cancel)

    #: a run in progress can be stopped from another thread (ONNX Runtime's ``RunOptions.terminate``)
    can_cancel = True

    def cancel(self) -> bool:
        """Stop the run in progress, from another thread: that call raises
        :class:`~dinomask.errors.RunCancelled` within milliseconds. Returns whether one was running
        (a call between runs does nothing)."""
        run = self._run
        if run is None:
            return False
        run.terminate = True
        return True

    def __repr__(self) -> str:
        return f"OnnxBackbone(name={self.spec.name!r}, dim={self.spec.feature_dim}, quantization={self.quantization})"

    def __call__(self, pixel_values) -> BackboneFeatures:
        """Same contract as :meth:`Backbone.__call__`: B x 3 x H x W normalised float.
        Raises :class:`~dinomask.errors.RunCancelled` when :meth:`cancel` stopped it."""
        import onnxruntime as ort
        import torch

        p = self.spec.patch_size
        height, width = pixel_values.shape[-2:]
        if height % p or width % p:
            raise ValueError(f"input height {height} and width {width} must be multiples of the patch size {p}")
        array = pixel_values.detach().float().cpu().numpy()
        inputs = {"pixel_values": array, **self._positions(height, width)}
        run = self._run = ort.RunOptions()
        try:
            hidden = torch.from_numpy(self.session.run(None, inputs, run)[0])
        except Exception as exc:
            if run.terminate:
                raise RunCancelled(f"the backbone run on a {height} x {width} input was cancelled") from exc
            raise
        finally:
            self._run = None
        start = 1 + self.spec.num_register_tokens
        patches = hidden[:, start:, :].reshape(hidden.shape[0], height // p, width // p, -1)
        return BackboneFeatures(cls=hidden[:, 0, :], patches=patches)


def onnx_for(backbone: Backbone, int8: bool, busy_wait: bool = True) -> OnnxBackbone:
    """The cached export of ``backbone`` (made on first use), ready to run."""
    quant = "int8" if int8 else "fp32"
    path = cache_dir() / "onnx" / f"{backbone.spec.fingerprint}-{quant}.onnx"
    if path.is_file() and path.with_suffix(".json").is_file() and _embeddings_path(path).is_file():
        info = read_info(path)
    else:
        info = export_onnx(backbone, path, int8=int8)
    # The cache is shared by every copy of the same weights: the export's spec names whichever
    # path exported it first, so the spec (name included) is the one the user loaded now.
    return _from_info(path, info, busy_wait, spec=backbone.spec)


def _from_info(path: Path, info: ExportInfo, busy_wait: bool = True, spec: BackboneSpec | None = None) -> OnnxBackbone:
    embeddings = _embeddings_path(path)
    if not embeddings.is_file():
        raise ModelNotFoundError(f"{embeddings} is missing; export the model again with 'dinomask export-onnx'")
    onnx = OnnxBackbone(path, spec or BackboneSpec(**info.spec), info.quantization, info.config, embeddings,
                        busy_wait=busy_wait)
    onnx.fidelity = info.fidelity_min_cosine
    return onnx


def load_onnx_file(path: str | Path, busy_wait: bool = True) -> OnnxBackbone:
    """An ``.onnx`` written by ``dinomask export-onnx`` (its ``.json`` sidecar beside it).

    The graph is run once on a 2 x 2 patch image and must give the sidecar's feature size: a
    damaged file or another model's graph is refused here, naming the file, not at the first frame.

    Raises:
        ModelNotFoundError: missing, damaged or foreign file, sidecar or embeddings.
    """
    import torch

    path = Path(path)
    info = read_info(path)
    try:
        onnx = _from_info(path, info, busy_wait)
        p, dim = onnx.spec.patch_size, onnx.spec.feature_dim
        out = onnx(torch.zeros(1, 3, 2 * p, 2 * p))
        if tuple(out.cls.shape) != (1, dim) or tuple(out.patches.shape) != (1, 2, 2, dim):
            raise ValueError(f"it gives CLS {tuple(out.cls.shape)} and patches {tuple(out.patches.shape)}, "
                             f"expected (1, {dim}) and (1, 2, 2, {dim})")
    except DinomaskError:
        raise
    except MemoryError:
        raise ModelNotFoundError(f"{path}: not enough memory to load this ONNX model") from None
    except Exception as exc:  # onnxruntime, onnx and safetensors raise many types for foreign files
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise ModelNotFoundError(f"{path} is not a model written by 'dinomask export-onnx': "
                                 f"{exc.__class__.__name__}: {detail}") from None
    return onnx
