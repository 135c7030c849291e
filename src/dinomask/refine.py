"""A promptable refiner after the patch grid, like PerSAM and Matcher (optional).

The similarity decision gives, per object, prompts for a SAM-family model (transformers
``SamModel`` checkpoints: SAM ViT-B/L/H, SlimSAM, MedSAM, ...): positive points at the
object's best patches, negative points at the most confident background, and the box of the
object's region. The refiner's mask, at the frame's full size, replaces the upsampled grid
mask. Its image encoder runs once per frame; the prompt decoder once for all objects.

Data flow: ``score (n_objects x h x w grid) -> Prompts (frame pixels) -> SamModel -> masks
(n_objects x H x W bool)``.

Quality depends entirely on the refiner's weights: none could be run on the build machines,
so only the plumbing, the prompts, the sizes and the time per frame are tested (with random
weights of the true shape). Measure it on your data with ``dinomask eval masks --refine sam
--refiner PATH``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dinomask.atomic import make_readable
from dinomask.errors import ModelNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import torch

REFINE_MODES: tuple[str, ...] = ("none", "sam")

#: Architecture bounds checked on a refiner's raw ``config.json`` before anything is built
#: (SAM ViT-H has 32 layers, 1280 wide, 16 heads; SlimSAM is smaller).
MAX_REFINER_LAYERS = 64
MAX_REFINER_WIDTH = 4096
MAX_REFINER_IMAGE = 2048


@dataclass(frozen=True)
class RefineSettings:
    """How the similarity decision prompts the refiner.

    Attributes:
        mode: ``none`` (the upsampled grid mask is the mask) or ``sam``.
        positives: positive points per object, at its highest-scoring patches (at least
            ``spacing`` patches apart).
        negatives: negative points per object, at its lowest-scoring patches.
        box: also give the box around the object's patches (score > 0).
        spacing: least distance between two points of one kind, in patches.
    """

    mode: str = "none"
    positives: int = 3
    negatives: int = 2
    box: bool = True
    spacing: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in REFINE_MODES:
            raise ValueError(f"refine must be one of {', '.join(REFINE_MODES)}; got {self.mode!r}")
        if not 1 <= self.positives <= 16 or not 0 <= self.negatives <= 16:
            raise ValueError(f"positives must be 1..16 and negatives 0..16; got {self.positives} and {self.negatives}")
        if self.spacing < 0:
            raise ValueError(f"spacing must be >= 0 patches, got {self.spacing}")

    @property
    def enabled(self) -> bool:
        """True when a refiner makes the mask (``mode`` is not ``none``)."""
        return self.mode != "none"


@dataclass(frozen=True)
class Prompts:
    """SAM prompts for one object, in frame pixels.

    Attributes:
        points: ``n x 2`` float32 ``(x, y)`` pixel coordinates.
        labels: ``n`` int64: 1 a positive point, 0 a negative one.
        box: ``(x0, y0, x1, y1)`` float32 pixel box, or None.
    """

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None


def _spread_peaks(order: np.ndarray, shape: tuple[int, int], count: int, spacing: float) -> list[int]:
    """``count`` flat indices from ``order`` (best first), each at least ``spacing`` cells from the
    others where there are enough such; then the best of the rest; then the best repeated."""
    picked: list[int] = []
    width = shape[1]
    for index in order:
        y, x = divmod(int(index), width)
        if all((y - py) ** 2 + (x - px) ** 2 >= spacing ** 2 for py, px in (divmod(p, width) for p in picked)):
            picked.append(int(index))
            if len(picked) == count:
                return picked
    picked += [int(i) for i in order if int(i) not in picked][: count - len(picked)]  # too few far apart: the best of the rest
    while picked and len(picked) < count:  # fewer candidates than points: the best again
        picked.append(picked[0])
    return picked


def prompts_from_score(score: np.ndarray, size: tuple[int, int], settings: RefineSettings) -> Prompts | None:
    """Prompts for one object from its decision score on the patch grid.

    Args:
        score: ``h x w`` float, the object where > 0.
        size: the frame's ``(H, W)`` in pixels.
        settings: point counts, spacing, box.

    Returns:
        Prompts with exactly ``positives + negatives`` points (so several objects batch in one
        decoder call), or None when no patch is the object (nothing to refine).
    """
    score = np.asarray(score, np.float32)
    if score.ndim != 2:
        raise ValueError(f"expected an h x w score, got shape {score.shape}")
    inside = score > 0
    if not inside.any():
        return None
    grid_h, grid_w = score.shape
    height, width = size
    cell_y, cell_x = height / grid_h, width / grid_w
    flat = score.ravel()
    # positives inside the object's region, best first; negatives among the rest, lowest first
    positive_order = np.flatnonzero(inside.ravel())[np.argsort(-flat[inside.ravel()], kind="stable")]
    negative_order = np.flatnonzero(~inside.ravel())[np.argsort(flat[~inside.ravel()], kind="stable")]
    chosen = _spread_peaks(positive_order, score.shape, settings.positives, settings.spacing)
    labels = [1] * len(chosen)
    if settings.negatives and len(negative_order):
        negatives = _spread_peaks(negative_order, score.shape, settings.negatives, settings.spacing)
        chosen += negatives
        labels += [0] * len(negatives)
    while len(chosen) < settings.positives + settings.negatives:  # a frame with no background patch
        chosen.append(chosen[0])
        labels.append(1)
    ys, xs = np.divmod(np.asarray(chosen), grid_w)
    points = np.stack([(xs + 0.5) * cell_x, (ys + 0.5) * cell_y], axis=1).astype(np.float32)
    box = None
    if settings.box:
        rows, cols = np.nonzero(inside)
        box = np.array([cols.min() * cell_x, rows.min() * cell_y, (cols.max() + 1) * cell_x, (rows.max() + 1) * cell_y],
                       np.float32)
        box = np.minimum(box, [width, height, width, height]).astype(np.float32)
    return Prompts(points, np.asarray(labels, np.int64), box)


def _check_refiner_config(path: Path) -> None:
    """A SAM ``config.json``: size, JSON, ``model_type`` sam, sizes in bounds; before transformers reads it."""
    from dinomask.backbones import read_config_json

    data = read_config_json(path)
    if data.get("model_type") != "sam":
        raise ModelNotFoundError(
            f"{path}: expected a SAM-family refiner (transformers SamModel, model_type 'sam'), "
            f"got model_type {data.get('model_type')!r}")
    vision = data.get("vision_config") or {}
    if not isinstance(vision, dict):
        raise ModelNotFoundError(f"{path}: vision_config must be an object, got {type(vision).__name__}")
    for name, high in (("num_hidden_layers", MAX_REFINER_LAYERS), ("hidden_size", MAX_REFINER_WIDTH),
                       ("num_attention_heads", 128), ("image_size", MAX_REFINER_IMAGE), ("patch_size", 64),
                       ("mlp_dim", 8 * MAX_REFINER_WIDTH), ("output_channels", MAX_REFINER_WIDTH)):
        value = vision.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high):
            raise ModelNotFoundError(f"{path}: vision_config.{name} must be a whole number in 1..{high}, got {value!r}")


def _check_processor_config(path: Path, image_size: int) -> None:
    """A refiner's ``preprocessor_config.json``: its sizes are what each frame is resized and padded
    to (``longest_edge`` 60000 would make a 6 GB frame), so each must be a whole number within the
    model's own input side ``image_size``, checked before transformers reads the file."""
    from dinomask.backbones import read_config_json

    data = read_config_json(path)
    for field in ("size", "pad_size", "mask_size", "mask_pad_size"):
        value = data.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not value:
            raise ModelNotFoundError(f"{path}: {field} must be an object of sizes such as {{\"longest_edge\": "
                                     f"{image_size}}}, got {value!r:.80}")
        for key, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= image_size:
                raise ModelNotFoundError(f"{path}: {field}.{key} must be a whole number in 1..{image_size} "
                                         f"(the model's input side, vision_config.image_size), got {number!r:.80}")
    if "longest_edge" not in (data.get("size") or {"longest_edge": 1}):
        raise ModelNotFoundError(f"{path}: size must give longest_edge (SAM resizes a frame's longest side to it), "
                                 f"got {data.get('size')!r:.80}")


def _processor_class():
    """transformers' SAM image processor: the torchvision one where torchvision is installed, else
    the PIL one (transformers 5 warns when asked for the first without torchvision)."""
    import importlib.util

    import transformers

    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "SamImageProcessorPil"):
        return transformers.SamImageProcessorPil
    return transformers.SamImageProcessor


class SamRefiner:
    """A transformers ``SamModel`` and its image processor, on one device.

    Use :meth:`load`; :meth:`refine` takes a frame and one :class:`Prompts` per object.
    """

    def __init__(self, model, processor, device: "torch.device", source: str):
        self.model = model
        self.processor = processor
        self.device = device
        self.source = source
        #: seconds of the last call: ``encoder`` (image embedding), ``decoder`` (prompts to masks)
        self.last_timings: dict[str, float] = {}

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "SamRefiner":
        """Load a SamModel folder (``save_pretrained`` layout: ``config.json`` and weights).

        Raises:
            ModelNotFoundError: the folder is missing, is not a SAM checkpoint, its config is
                out of bounds, or a weight is missing, unexpected or of another shape.
        """
        from dinomask.backbones import check_loaded, quiet_loading, resolve_device

        folder = Path(path)
        if folder.is_file() and folder.name in ("config.json", "preprocessor_config.json", "model.safetensors"):
            raise ModelNotFoundError(f"refiner {str(path)!r} is a file of a SamModel folder; give the folder itself: "
                                     f"--refiner {folder.parent}")
        config_file = folder / "config.json"
        if not folder.is_dir() or not config_file.is_file():
            raise ModelNotFoundError(
                f"refiner {str(path)!r}: expected a folder with config.json and weights of a transformers SamModel "
                "(e.g. facebook/sam-vit-base or a SlimSAM checkpoint saved with save_pretrained); "
                + ("it does not exist" if not folder.exists() else "no config.json there"))
        _check_refiner_config(config_file)
        from transformers import SamModel

        try:
            with quiet_loading():
                model, info = SamModel.from_pretrained(folder, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelNotFoundError(f"refiner {folder}: could not be loaded as a SamModel: {exc}") from None
        check_loaded(f"refiner {folder}", info.get("missing_keys", ()), info.get("unexpected_keys", ()),
                     info.get("mismatched_keys", ()))
        _check_finite(model, folder)
        processor_class = _processor_class()
        side = int(model.config.vision_config.image_size)
        if (folder / "preprocessor_config.json").is_file():
            _check_processor_config(folder / "preprocessor_config.json", side)
            try:
                processor = processor_class.from_pretrained(folder)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise ModelNotFoundError(f"refiner {folder}: its preprocessor_config.json could not be read: "
                                         f"{exc.__class__.__name__}: {str(exc)[:200]}") from None
        else:  # SAM's own preprocessing (ImageNet mean/std, longest side resized and padded to the model's input)
            processor = processor_class(size={"longest_edge": side}, pad_size={"height": side, "width": side})
        target = resolve_device(device)
        model = model.to(target).eval()
        return cls(model, processor, target, str(folder))

    def unfit(self, height: int, width: int) -> str | None:
        """Why a ``height x width`` frame cannot be refined (None when it can): the processor
        resizes the longest side to ``longest_edge``, and a frame thinner than that ratio would
        come out 0 px wide."""
        longest = int((getattr(self.processor, "size", None) or {}).get("longest_edge", 1024))
        short = min(height, width) * longest / max(height, width, 1)
        if min(height, width) < 1 or int(short + 0.5) < 1:
            return (f"a {width}x{height} px frame is too thin for the refiner (its longest side is resized to "
                    f"{longest} px, its short side to {short:.2f} px)")
        return None

    def refine(self, image: np.ndarray, prompts: list[Prompts]) -> np.ndarray:
        """Masks of the objects in ``image``.

        Args:
            image: ``H x W x 3`` uint8 RGB.
            prompts: one per object, each with the same number of points.

        Returns:
            ``n_objects x H x W`` bool.
        """
        import torch

        if not prompts:
            return np.zeros((0, *image.shape[:2]), bool)
        counts = {len(p.points) for p in prompts}
        if len(counts) != 1 or any((p.box is None) != (prompts[0].box is None) for p in prompts):
            raise ValueError("every object's prompts must have the same number of points, and all or none a box")
        start = time.perf_counter()
        reason = self.unfit(*image.shape[:2])
        if reason:
            raise ValueError(reason)
        # channels last, said explicitly: a frame 1 or 3 px high would otherwise be taken for channels first
        inputs = self.processor(images=image, return_tensors="pt", input_data_format="channels_last")
        original = inputs["original_sizes"]
        reshaped = inputs["reshaped_input_sizes"]
        scale = float(reshaped[0][1]) / image.shape[1], float(reshaped[0][0]) / image.shape[0]
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
            encoded = time.perf_counter()
            points = np.stack([p.points for p in prompts]) * np.asarray(scale, np.float32)  # into the resized frame
            labels = np.stack([p.labels for p in prompts])
            kwargs = {
                "image_embeddings": embeddings,
                "input_points": torch.from_numpy(points[None].astype(np.float32)).to(self.device),
                "input_labels": torch.from_numpy(labels[None]).to(self.device),
                "multimask_output": False,
            }
            if prompts[0].box is not None:
                boxes = np.stack([p.box for p in prompts]) * np.asarray(scale * 2, np.float32)
                kwargs["input_boxes"] = torch.from_numpy(boxes[None].astype(np.float32)).to(self.device)
            outputs = self.model(**kwargs)
            # SAM's own post-processing: the padded square back to the resized frame, then to H x W
            masks = self.processor.post_process_masks(outputs.pred_masks.float().cpu(), original, reshaped)[0]
        self.last_timings = {"encoder": encoded - start, "decoder": time.perf_counter() - encoded}
        return masks[:, 0].numpy().astype(bool)


def _check_finite(model, folder: Path) -> None:
    """Refuse weights holding NaN or infinite values: they give all-empty masks, silently."""
    import torch

    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelNotFoundError(f"refiner {folder}: weight {name} holds NaN or infinite values; "
                                         "its masks would be empty, so it is not loaded")


#: Shapes :func:`random_refiner_dir` can build: SAM ViT-B (``facebook/sam-vit-base``, the
#: smallest released SAM, 94 M parameters) and a tiny one for tests.
REFINER_SHAPES: tuple[str, ...] = ("sam-vit-base", "tiny")


def random_refiner_dir(directory: str | Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight SamModel folder (``save_pretrained`` layout) of a given shape.

    Its masks mean nothing: it exists to test the plumbing, prompts, sizes and time per frame
    of the refiner where real SAM weights cannot be downloaded.
    """
    import torch
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    from dinomask.backbones import quiet_loading

    if shape == "sam-vit-base":
        config = SamConfig()  # transformers' defaults are SAM ViT-B's shape
    elif shape == "tiny":
        config = SamConfig(
            vision_config=SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                          output_channels=32, image_size=256, patch_size=16, window_size=4,
                                          global_attn_indexes=[1], num_pos_feats=16),
            prompt_encoder_config=SamPromptEncoderConfig(hidden_size=32, image_size=256, patch_size=16,
                                                         mask_input_channels=4),
            mask_decoder_config=SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_hidden_layers=2,
                                                     num_attention_heads=2, iou_head_hidden_dim=32))
    else:
        raise ValueError(f"shape must be one of {', '.join(REFINER_SHAPES)}; got {shape!r}")
    torch.manual_seed(seed)
    model = SamModel(config)
    with torch.no_grad():  # transformers initialises SAM's ViT with std 1e-10: every mask would be the same
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1 and "vision_encoder" in name:
                torch.nn.init.trunc_normal_(parameter, std=0.02)
    directory = Path(directory)
    with quiet_loading():
        model.save_pretrained(directory)
    for written in directory.iterdir():  # transformers writes the weights 0600 beside a 0644 config.json
        if written.is_file():
            make_readable(written)
    return directory
