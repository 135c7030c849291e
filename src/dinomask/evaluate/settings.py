"""Named evaluation settings: which segmenter configuration, which model, how many references.

A setting is written ``name:key=value,key=value`` on the command line, e.g.
``mine:method=dinomask,prototype=kmeans,k=8,threshold=otsu,refs=3``. Keys:

``method`` (preset to start from: dinomask | paper), ``prototype``, ``k``, ``threshold``,
``bg`` (none | reference | frame | both), ``upsample``, ``resolution``, ``tokens``, ``aspect``
(keep | square), ``temporal`` (alpha), ``adapt`` (prototype adaptation rate), ``roi`` (1 = region of interest on video), ``refs`` (reference frames per sequence),
``model`` (backbone for this setting only), ``refine`` (none | sam: the run's ``--refiner``, prompted by the score),
``presence`` (reference | none | a cosine: how a frame says "no object here"), ``keyframes``
(off | auto | every:N: the backbone on keyframes, optical flow between, as ``remove`` on a video).

Within a sequence the frames are scored in order by one segmenter, so ``temporal``, ``adapt``,
``roi`` and ``keyframes`` act as they do on a video; the others decide each frame alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from dinomask.postprocess import TemporalSettings
from dinomask.preprocess import InputGeometry
from dinomask.roi import RoiSettings
from dinomask.segmenter import SegmenterConfig

SETTING_KEYS = ("method", "prototype", "k", "threshold", "bg", "upsample", "resolution", "tokens", "aspect",
                "temporal", "adapt", "roi", "refs", "model", "refine", "presence", "keyframes")


@dataclass(frozen=True)
class EvalSetting:
    """One column of the comparison table.

    Attributes:
        name: shown in reports.
        config: segmenter configuration.
        refs: reference frames per sequence (the first ``refs`` frames).
        model: backbone source for this setting, or ``None`` for the run's ``--model``.
    """

    name: str
    config: SegmenterConfig
    refs: int = 1
    model: str | None = None


def parse_setting(text: str) -> EvalSetting:
    """``name:key=value,...`` -> :class:`EvalSetting` (see the module docstring)."""
    name, _, body = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"a setting needs a name before ':', got {text!r}")
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in SETTING_KEYS:
            raise ValueError(f"setting {name!r}: expected key=value with key in {', '.join(SETTING_KEYS)}; got {part!r}")
        pairs[key] = value
    config = SegmenterConfig.preset(pairs.pop("method", "dinomask"))
    changes: dict = {}
    if "prototype" in pairs:
        changes["prototype"] = pairs.pop("prototype")
    if "k" in pairs:
        changes["k"] = int(pairs.pop("k"))
    if "threshold" in pairs:
        changes["threshold"] = pairs.pop("threshold")
    if "bg" in pairs:
        changes["background"] = pairs.pop("bg")
    if "presence" in pairs:
        changes["presence"] = pairs.pop("presence")
    if "upsample" in pairs:
        changes["upsample"] = pairs.pop("upsample")
    resolution = pairs.pop("resolution", config.geometry.resolution)
    tokens = int(pairs.pop("tokens", config.geometry.tokens))
    aspect = pairs.pop("aspect", "keep" if config.geometry.keep_aspect else "square")
    if aspect not in ("keep", "square"):
        raise ValueError(f"setting {name!r}: aspect must be keep or square, got {aspect!r}")
    if resolution is None and aspect == "square":
        resolution = 518
    changes["geometry"] = InputGeometry(None if resolution is None else int(resolution), aspect == "keep", tokens)
    if "temporal" in pairs or "adapt" in pairs:
        changes["temporal"] = TemporalSettings(alpha=float(pairs.pop("temporal", 0.0)), adapt=float(pairs.pop("adapt", 0.0)))
    if "roi" in pairs:
        changes["roi"] = RoiSettings(enabled=pairs.pop("roi") in ("1", "true", "yes", "on"))
    if "keyframes" in pairs:
        from dinomask.keyframes import KeyframeSettings

        changes["keyframes"] = KeyframeSettings.parse(pairs.pop("keyframes"))
    if "refine" in pairs:
        from dinomask.refine import RefineSettings

        changes["refine"] = RefineSettings(mode=pairs.pop("refine"))
    refs = int(pairs.pop("refs", 1))
    if refs < 1:
        raise ValueError(f"setting {name!r}: refs must be at least 1, got {refs}")
    model = pairs.pop("model", None)
    return EvalSetting(name, config.replace(**changes), refs, model)


#: Every option of the method, each changed alone from the improved default, plus the
#: method as written with single improvements: one eval run compares them all. ``dinomask`` is
#: what ``remove`` runs on images (each alone); ``dinomask(video)`` what it runs on a video file,
#: its defaults there (temporal 0.5, region of interest, keyframes auto: ``cli/options.py``'s
#: ``segmenter_config``), kept equal by a test.
STANDARD = [
    "paper:method=paper",
    "paper+otsu:method=paper,threshold=otsu",
    "paper+bilinear:method=paper,upsample=bilinear",
    "paper+aspect:method=paper,aspect=keep",
    "dinomask:method=dinomask",
    "dinomask(video):temporal=0.5,roi=1,keyframes=auto",
    "proto=cls:prototype=cls",
    "proto=patch-mean:prototype=patch-mean",
    "proto=kmeans8:prototype=kmeans,k=8",
    "bg=none(otsu):bg=none",
    "bg=frame:bg=frame",
    "bg=both:bg=both",
    "bg=none,thr=0.5:bg=none,threshold=0.5",
    "bg=none,thr=relative0.8:bg=none,threshold=relative:0.8",
    "presence=none:presence=none",
    "upsample=nearest:upsample=nearest",
    "upsample=bilinear:upsample=bilinear",
    "upsample=bilateral:upsample=bilateral",
    "temporal=0.5:temporal=0.5",
    "adapt=0.2:adapt=0.2",
    "roi:roi=1",
    "refs=3:refs=3",
]
QUICK = ["paper:method=paper", "dinomask:method=dinomask"]


def named_settings(names: list[str]) -> list[EvalSetting]:
    """Expand ``standard`` / ``quick`` and parse the rest."""
    out: list[EvalSetting] = []
    for text in names:
        if text == "standard":
            out += [parse_setting(s) for s in STANDARD]
        elif text == "quick":
            out += [parse_setting(s) for s in QUICK]
        else:
            out.append(parse_setting(text))
    seen = set()
    for setting in out:
        if setting.name in seen:
            raise ValueError(f"two settings are named {setting.name!r}")
        seen.add(setting.name)
    return out


def with_refined_twins(settings: list[EvalSetting]) -> list[EvalSetting]:
    """Each setting, then the same refined by the run's refiner (named ``NAME+sam``), so the
    report sets the refiner beside what it refines."""
    from dinomask.refine import RefineSettings

    out: list[EvalSetting] = []
    for setting in settings:
        out.append(setting)
        if not setting.config.refine.enabled:
            out.append(EvalSetting(f"{setting.name}+sam", setting.config.replace(refine=RefineSettings(mode="sam")),
                                   setting.refs, setting.model))
    return out
