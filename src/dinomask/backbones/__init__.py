"""Backbones: a name or path in, a callable that returns CLS and patch features out.

This module is the whole interface the rest of dinomask uses; the submodules split the job:

* ``spec``: :class:`BackboneSpec` and :class:`BackboneFeatures` (what travels with weights);
* ``registry``: short names, hub ids, true shapes, transformers classes;
* ``sources``: where weights come from (hub cache, folder, ``.safetensors``, Meta ``.pth``);
* ``meta_v2`` / ``meta_v3``: Meta's checkpoint layouts converted to transformers', and
  DINOv2's position-embedding interpolation as Meta's code does it;
* ``devices``: device and compute dtype;
* ``torch_runtime`` / ``onnx_runtime``: how a forward pass runs;
* ``loader``: :func:`load_backbone`, which picks the runtime;
* ``random_models``: random weights in the released shapes, for tests and speed checks.

Data flows one way (spec <- registry <- meta_v2 <- meta_v3 <- sources <- runtimes <- loader);
``tests/test_imports.py`` checks that no import cycle exists anywhere in the package and that
no module outside this one imports a submodule. Every backbone, whatever its runtime, is
called the same way::

    features = backbone(pixel_values)        # B x 3 x H x W float, normalised with spec.mean/std
    features.cls                              # B x C
    features.patches                          # B x h x w x C, h = H // spec.patch_size

Nothing heavy (torch, transformers, onnxruntime) is imported until a backbone is loaded.
"""

from dinomask.backbones.devices import resolve_device
from dinomask.backbones.loader import RUNTIMES, load_backbone, quiet_loading
from dinomask.backbones.onnx_runtime import MIN_FIDELITY, OnnxBackbone, default_threads, export_onnx
from dinomask.backbones.random_models import random_backbone_dir
from dinomask.backbones.registry import ARCHITECTURES, BACKBONES, DEFAULT_BACKBONE, default_model
from dinomask.backbones.sources import download
from dinomask.backbones.spec import BackboneFeatures, BackboneSpec
from dinomask.backbones.torch_runtime import Backbone
from dinomask.backbones.weights import check_loaded, read_config_json

__all__ = [
    "ARCHITECTURES", "BACKBONES", "DEFAULT_BACKBONE", "default_model", "MIN_FIDELITY", "RUNTIMES", "Backbone", "BackboneFeatures",
    "BackboneSpec", "OnnxBackbone", "check_loaded", "default_threads", "download", "export_onnx", "load_backbone", "quiet_loading",
    "random_backbone_dir", "read_config_json", "resolve_device",
]
