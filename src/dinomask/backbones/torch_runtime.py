"""The torch runtime: a transformers DINOv2/DINOv3 model wrapped to return named features."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dinomask.backbones.meta_v2 import use_meta_position_embeddings
from dinomask.backbones.registry import FAMILIES
from dinomask.backbones.spec import BackboneFeatures, BackboneSpec
from dinomask.backbones.weights import fingerprint

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Backbone:
    """A loaded DINOv2 or DINOv3 with its preprocessing spec; call it on normalised pixels.

    Args:
        model: a transformers ``Dinov2Model``, ``Dinov2WithRegistersModel`` or ``DINOv3ViTModel``
            in eval mode (anything whose output has ``last_hidden_state`` as CLS, registers, patches).
        spec: the :class:`BackboneSpec` of these weights.
        device: torch device the model lives on.
        dtype: compute dtype; ``torch.bfloat16``/``torch.float16`` run under autocast
            with float32 weights, ``torch.float32`` runs plain.
    """

    def __init__(self, model: "torch.nn.Module", spec: BackboneSpec, device: "torch.device", dtype: "torch.dtype"):
        self.model = model
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.runtime = "torch"
        #: Why these weights are known to be random (reports print it as a warning), or None.
        self.random_weights: str | None = None

    #: a run in progress cannot be stopped from another thread (see :meth:`cancel`)
    can_cancel = False

    def cancel(self) -> bool:
        """A torch forward cannot be stopped part-way: nothing happens; returns False."""
        return False

    def __repr__(self) -> str:
        return (
            f"Backbone(name={self.spec.name!r}, dim={self.spec.feature_dim}, "
            f"registers={self.spec.num_register_tokens}, device={self.device}, dtype={self.dtype})"
        )

    def __call__(self, pixel_values: "torch.Tensor") -> BackboneFeatures:
        """Run the model.

        Args:
            pixel_values: B x 3 x H x W float tensor, normalised with ``spec.mean/std``;
                H and W must be multiples of ``spec.patch_size``.
        """
        import torch

        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"expected pixel_values of shape B x 3 x H x W, got {tuple(pixel_values.shape)}"
            )
        p = self.spec.patch_size
        height, width = pixel_values.shape[-2:]
        if height % p or width % p:
            raise ValueError(
                f"input height {height} and width {width} must be multiples of the patch size {p}"
            )
        pixel_values = pixel_values.to(self.device, torch.float32)
        autocast = self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast(
            device_type=self.device.type, dtype=self.dtype, enabled=autocast
        ):
            hidden = self.model(pixel_values=pixel_values).last_hidden_state
        hidden = hidden.float()
        start = 1 + self.spec.num_register_tokens
        patches = hidden[:, start:, :].reshape(hidden.shape[0], height // p, width // p, -1)
        return BackboneFeatures(cls=hidden[:, 0, :], patches=patches)


def untrained_reason(model) -> str | None:
    """Why ``model``'s weights are known to be random, or None when nothing says so.

    ``dinomask random-model`` marks its config; otherwise transformers initialises every
    LayerScale to one constant, which training never leaves (released DINOv2 and DINOv3
    weights have a different scale per channel)."""
    if getattr(model.config, "dinomask_random_weights", False):
        return "written by 'dinomask random-model'"
    scales = [p.detach().float() for name, p in model.named_parameters() if "lambda1" in name]
    if scales and all(float(scale.std()) == 0.0 for scale in scales):
        return "every LayerScale still holds its initial constant: these weights were never trained"
    return None


def wrap_model(model, source: str, mean, std, torch_device, torch_dtype, files=()) -> Backbone:
    """A transformers DINOv2/DINOv3 model -> :class:`Backbone` on ``torch_device``.

    ``files`` are the files the weights were read from; they key the fingerprint's cache
    (:func:`~dinomask.backbones.weights.fingerprint`).

    DINOv2's position embeddings are interpolated as Meta's code does
    (:func:`~dinomask.backbones.meta_v2.use_meta_position_embeddings`); DINOv3's RoPE needs nothing."""
    family = FAMILIES[model.config.model_type]
    registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
    spec = BackboneSpec(
        name=source,
        patch_size=int(model.config.patch_size),
        mean=tuple(mean),
        std=tuple(std),
        feature_dim=int(model.config.hidden_size),
        num_register_tokens=registers,
        fingerprint=fingerprint(model, registers, files, where=source),
        family=family,
    )
    if family == "dinov2":
        use_meta_position_embeddings(model.embeddings)
    model = model.to(torch_device).eval()
    backbone = Backbone(model, spec, torch_device, torch_dtype)
    backbone.random_weights = untrained_reason(model)
    return backbone
