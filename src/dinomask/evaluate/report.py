"""Write an eval's ``metrics.json``, ``report.md`` and PNG plots into one output folder."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from dinomask.errors import DinomaskError
from dinomask.files import check_writable
from dinomask.evaluate.masks import MaskEvalResult
from dinomask.evaluate.metrics import ConfusionMatrix
from dinomask import plots

AGGREGATION = (
    "Per frame: IoU of the object; mIoU = mean of object IoU and background IoU; pixel accuracy. "
    "A class whose prediction and ground truth are both empty has IoU 1. Per sequence: the mean over "
    "its scored frames. Dataset: the mean over sequences (each sequence weighs the same). Reference "
    "frames are never scored, and every setting scores the same frames."
)


def prepare_output(out_dir: Path, overwrite: bool) -> Path:
    """Create the folder and prove it writable; refuse one that already holds a report unless ``overwrite``."""
    if (out_dir / "metrics.json").exists() and not overwrite:
        raise DinomaskError(f"{out_dir} already holds an eval (metrics.json); pass --overwrite or choose another -o")
    return check_writable(out_dir, "the eval report")


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("dinomask", "torch", "transformers", "numpy", "opencv-contrib-python-headless", "onnxruntime"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _header(kind: str, run: dict) -> dict:
    return {"eval": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(), **run}


def _write_json(path: Path, data: dict) -> None:
    def default(value):
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(data, indent=2, default=default, allow_nan=True))
    tmp.replace(path)


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _problems(lines: list[str]) -> list[str]:
    if not lines:
        return ["", "No dataset problems found."]
    return ["", f"## Problems ({len(lines)})", ""] + [f"- {p}" for p in lines]


def write_masks_report(out_dir: Path, result: MaskEvalResult, run: dict, settings_text: dict[str, str]) -> list[Path]:
    """metrics.json, report.md, heatmaps.png, confusion_<setting>.png, threshold_curve.png, settings.png."""
    files = []
    _write_json(out_dir / "metrics.json", _header("masks", run) | {"aggregation": AGGREGATION} | result.to_json())
    files.append(out_dir / "metrics.json")
    if result.examples:
        shown = {e["setting"] for e in result.examples}
        first = "dinomask" if "dinomask" in shown else result.examples[0]["setting"]
        files.append(plots.plot_heatmaps([e for e in result.examples if e["setting"] == first][:4], out_dir / "heatmaps.png"))
    for name in result.settings[:2] + [n for n in result.settings[2:] if n.startswith("dinomask")]:
        matrix = ConfusionMatrix(["background", "object"])
        matrix.matrix[:] = np.array(result.confusion[name]["matrix"])
        files.append(matrix.plot(out_dir / f"confusion_{_slug(name)}.png", title=f"pixels: {name}"))
    if result.sweeps:
        files.append(plots.plot_threshold_curves(result.sweeps, out_dir / "threshold_curve.png"))
    files.append(plots.plot_setting_bars(result.dataset, out_dir / "settings.png"))
    lines = [
        "# dinomask eval masks", "",
        f"Dataset: `{run['dataset']}` ({run['layout']} layout). Model: `{run['model']}`.",
        "", AGGREGATION, "",
        "| setting | mIoU | object IoU | pixel acc. | frames | patches/frame | threshold rule(s) | options |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in result.settings:
        d = result.dataset[name]
        patches = f"{d['patches_per_frame']:.0f}" if d["patches_per_frame"] else "n/a"  # n/a: not a patch model
        lines.append(f"| {name} | {_fmt(d['miou'])} | {_fmt(d['iou'])} | {_fmt(d['pixel_accuracy'])} | "
                     f"{d['frames']} | {patches} | {', '.join(result.rules[name])} | "
                     f"{settings_text.get(name, '')} |")
    if result.sweeps:
        lines += ["", "## Threshold sweep", "", "| setting | best threshold | mIoU there | mIoU at 0.5 |", "|---|---|---|---|"]
        for name, sweep in result.sweeps.items():
            at_half = sweep["miou"][sweep["thresholds"].index(0.5)]
            lines.append(f"| {name} | {sweep['best_threshold']:.2f} | {_fmt(sweep['best_miou'])} | {_fmt(at_half)} |")
    lines += ["", "## Per sequence (mIoU)", "", "| sequence | " + " | ".join(result.settings) + " |",
              "|---" * (len(result.settings) + 1) + "|"]
    sequences = sorted({s for per in result.per_sequence.values() for s in per})
    for seq in sequences:
        cells = [_fmt(result.per_sequence[n].get(seq, {}).get("miou")) for n in result.settings]
        lines.append(f"| {seq} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: " + ", ".join(f"`{p.name}`" for p in files if p.suffix == ".png")]
    lines += _problems(result.problems)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return files + [out_dir / "report.md"]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_recognition_report(out_dir: Path, result: dict, run: dict) -> list[Path]:
    _write_json(out_dir / "metrics.json", _header("recognition", run) | result)
    files = [out_dir / "metrics.json"]
    lines = ["# dinomask eval recognition", "",
             f"Dataset: `{run['dataset']}`. Model: `{run['model']}`. Segmenter: `{result['segmenter']}`. "
             f"References per class: {result['references_per_class']} (first frames, background painted black).",
             "", "Nearest class prototype (mean CLS feature of the class's references) by cosine.", "",
             "| variant | accuracy | " + " | ".join(f"acc. {c}" for c in result["classes"]) + " |",
             "|---" * (len(result["classes"]) + 2) + "|"]
    for variant, metrics in result["variants"].items():
        cells = [_fmt(metrics["per_class_accuracy"][c]) for c in result["classes"]]
        lines.append(f"| {variant} | {_fmt(metrics['accuracy'])} | " + " | ".join(cells) + " |")
        files.append(plots.plot_confusion(np.array(metrics["matrix"]), result["classes"],
                                          out_dir / f"confusion_{_slug(variant)}.png", title=variant))
    lines += ["", "Plots: " + ", ".join(f"`{p.name}`" for p in files if p.suffix == ".png")]
    lines += _problems(result["problems"])
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return files + [out_dir / "report.md"]


def write_control_report(out_dir: Path, result: dict, run: dict) -> list[Path]:
    from dinomask.evaluate import control

    _write_json(out_dir / "metrics.json", _header("control", run) | result)
    series = {seq: {p: np.array(r["deviation"]) for p, r in pipelines.items()} for seq, pipelines in result["sequences"].items()}
    files = [out_dir / "metrics.json", plots.plot_deviation(series, out_dir / "deviation.png",
                                                            title=f"pan-tilt loop, gain {result['model']['gain']}")]
    lines = ["# dinomask eval control", "",
             f"Dataset: `{run['dataset']}`. Model: `{run['model']}`. Segmenter: `{result['segmenter']}`.", "",
             "## The loop", "", control.__doc__.split("The model", 1)[1].strip().replace("\n\n", "\n\n"), "",
             "## Results (mean over sequences; units: fraction of the frame)", "",
             "| perception | RMS deviation | max deviation | jitter |", "|---|---|---|---|"]
    for p, m in result["mean_over_sequences"].items():
        lines.append(f"| {p} | {_fmt(m['rms'])} | {_fmt(m['max'])} | {_fmt(m['jitter'])} |")
    lines += ["", "| sequence | perception | RMS | max | jitter | steps with no measurement |", "|---|---|---|---|---|---|"]
    for seq, pipelines in result["sequences"].items():
        for p, r in pipelines.items():
            lines.append(f"| {seq} | {p} | {_fmt(r['rms'])} | {_fmt(r['max'])} | {_fmt(r['jitter'])} | {r['lost']} |")
    lines += ["", "Plot: `deviation.png`"]
    lines += _problems(result["problems"])
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return files + [out_dir / "report.md"]
