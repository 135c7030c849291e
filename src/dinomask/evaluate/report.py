"""Write an eval's ``metrics.json``, ``report.md`` and PNG plots into one output folder."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from dinomask.errors import DinomaskError
from dinomask.files import check_writable
from dinomask.evaluate.masks import MaskEvalResult, ranked
from dinomask.evaluate.metrics import ConfusionMatrix
from dinomask import plots
from dinomask.plots import plot_caption

AGGREGATION = (
    "Per frame: J = IoU of the object; F = DAVIS boundary F-measure (boundary pixels matched within "
    "0.8% of the image diagonal); mIoU = mean of object and background IoU (a column only: an empty "
    "mask scores about 0.46 on it); pixel accuracy. A class whose prediction and ground truth are both "
    "empty has IoU 1. Per sequence: DAVIS statistics over its scored frames (mean; recall = share of "
    "frames above 0.5; decay = first quarter minus last quarter). J&F = mean of J and F. Dataset: the "
    "mean over sequences (each sequence weighs the same). Reference frames are never scored, and every "
    "setting scores the same frames. Settings are ranked by J&F."
)


def conditions(backbone, max_frames: int | None = None) -> dict:
    """What was run: the backbone's source and fingerprint, runtime, int8 or not, dtype, device,
    ``--max-frames``, and why the weights are known to be random (None when nothing says so)."""
    runtime = getattr(backbone, "runtime", "torch")
    return {"backbone": backbone.spec.name, "fingerprint": backbone.spec.fingerprint,
            "family": getattr(backbone.spec, "family", "dinov2"), "runtime": runtime,
            "int8": runtime == "onnx-int8", "dtype": str(backbone.dtype).replace("torch.", ""),
            "device": str(backbone.device), "max_frames": max_frames,
            "random_weights": getattr(backbone, "random_weights", None)}


def random_weights_banner(run: dict) -> str | None:
    """The warning every report and the CLI print when a backbone's weights are random."""
    reasons = sorted({c["random_weights"] for c in run.get("conditions", {}).values() if c.get("random_weights")})
    if not reasons:
        return None
    return ("**RANDOM WEIGHTS: the dinomask numbers in this report mean nothing** (" + "; ".join(reasons) +
            "). Download real weights (`dinomask download dinov2_vits14_reg`) to measure quality.")


def _run_lines(run: dict) -> list[str]:
    lines = []
    banner = random_weights_banner(run)
    if banner:
        lines += [banner, ""]
    for source, c in run.get("conditions", {}).items():
        lines.append(f"Run: `{c['backbone']}` (fingerprint {c['fingerprint']}, {c['family']}), runtime {c['runtime']}"
                     f"{' (int8 weights)' if c['int8'] else ''}, dtype {c['dtype']}, device {c['device']}, "
                     f"max frames per sequence {c['max_frames'] or 'all'}.")
    return lines + ([""] if lines else [])


def _left_out(run: dict) -> list[str]:
    left = run.get("left_out") or []
    return ["", f"## Left out ({len(left)})", ""] + [f"- {line}" for line in left] if left else []


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


def cell(text) -> str:
    """One Markdown table cell: on one line, its pipes escaped (a newline ends a table on GitHub
    and MkDocs, a bare pipe splits the cell)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _scored_frames_lines(run: dict) -> list[str]:
    """What every row of the masks table scores, said above it: the same frames for every setting,
    and frame by frame (what ``remove`` adds on video is ``eval live``'s to measure)."""
    held = run.get("held_back")
    if held is None:
        return []
    why = (f" (a setting with refs={held} holds {held} reference frames back, so every row leaves them unscored)"
           if held > 1 else "")
    return [f"Every setting is scored on the same frames: each sequence's frames after its first {held}{why}. "
            "Within a sequence one segmenter scores the frames in order, so temporal smoothing, adaptation, the "
            "region of interest and keyframes act as on a video; `dinomask` is what `remove` runs on separate "
            "images, `dinomask(video)` what it runs on a video file (temporal 0.5, region of interest on, keyframes "
            "auto). On a camera's clock `dinomask eval live` measures the live loop.", ""]


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
        files.append(plots.plot_heatmaps([e for e in result.examples if e["setting"] == first][:6], out_dir / "heatmaps.png",
                                         plot_caption(run)))
    for name in result.settings[:2] + [n for n in result.settings[2:] if n.startswith("dinomask")]:
        matrix = ConfusionMatrix(["background", "object"])
        matrix.matrix[:] = np.array(result.confusion[name]["matrix"])
        files.append(matrix.plot(out_dir / f"confusion_{_slug(name)}.png", title=f"pixels: {name}",
                                 caption=plot_caption(run)))
    if result.sweeps:
        files.append(plots.plot_threshold_curves(result.sweeps, out_dir / "threshold_curve.png", plot_caption(run)))
    order = ranked(result)
    files.append(plots.plot_setting_bars({n: result.dataset[n] for n in order}, out_dir / "settings.png", metric="jf",
                                           caption=plot_caption(run)))
    lines = [
        "# dinomask eval masks", "",
        *_run_lines(run),
        f"Dataset: `{run['dataset']}` ({run['layout']} layout). Model: `{run['model']}`.",
        "", AGGREGATION, "", *_scored_frames_lines(run),
        "| rank | setting | J&F | J mean | J recall | J decay | F mean | F recall | F decay | mIoU | pixel acc. "
        "| frames | patches/frame | threshold rule(s) | options |",
        "|---" * 15 + "|",
    ]
    for rank, name in enumerate(order, start=1):
        d = result.dataset[name]
        patches = f"{d['patches_per_frame']:.0f}" if d["patches_per_frame"] else "n/a"  # n/a: not a patch model
        cells = [_fmt(d[k]) for k in ("jf", "j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay", "miou",
                                       "pixel_accuracy")]
        lines.append(f"| {rank} | {cell(name)} | " + " | ".join(cells) + f" | {d['frames']} | {patches} | "
                     f"{cell(', '.join(result.rules[name]))} | {cell(settings_text.get(name, ''))} |")
    if result.sweeps:
        lines += ["", "## Threshold sweep (J)", "", "| setting | best threshold | J there | J at 0.5 |", "|---|---|---|---|"]
        for name, sweep in result.sweeps.items():
            at_half = sweep["j"][sweep["thresholds"].index(0.5)]
            lines.append(f"| {cell(name)} | {sweep['best_threshold']:.2f} | {_fmt(sweep['best_j'])} | {_fmt(at_half)} |")
    with_oracle = [n for n in order if "oracle" in result.dataset[n]]
    if with_oracle:
        lines += ["", "## Ceilings: the ground truth as the patch classifier", "",
                  "The oracle columns score each setting with the ground truth averaged onto its own grid in place of "
                  "the features (then its own upsampling and region of interest): the oracle's shortfall from 1 is lost "
                  "to the grid and the refinement, and the model's shortfall from the oracle is lost to the features.", "",
                  "| setting | oracle J&F | oracle J | oracle F | model J&F | lost to the features (J&F) | oracle patches/frame |",
                  "|---|---|---|---|---|---|---|"]
        for name in sorted(with_oracle, key=lambda n: -result.dataset[n]["oracle"]["jf"]):
            d, o = result.dataset[name], result.dataset[name]["oracle"]
            lines.append(f"| {cell(name)} | {_fmt(o['jf'])} | {_fmt(o['j'])} | {_fmt(o['f'])} | {_fmt(d['jf'])} | "
                         f"{_fmt(o['jf'] - d['jf'])} | {o['patches_per_frame']:.0f} |")
    lines += ["", "## Per sequence (J&F)", "", "| sequence | " + " | ".join(cell(o) for o in order) + " |",
              "|---" * (len(order) + 1) + "|"]
    sequences = sorted({s for per in result.per_sequence.values() for s in per})
    for seq in sequences:
        cells = [_fmt(result.per_sequence[n].get(seq, {}).get("jf")) for n in order]
        lines.append(f"| {cell(seq)} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: " + ", ".join(f"`{p.name}`" for p in files if p.suffix == ".png")]
    lines += _left_out(run)
    lines += _problems(result.problems)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return files + [out_dir / "report.md"]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_recognition_report(out_dir: Path, result: dict, run: dict) -> list[Path]:
    """metrics.json, report.md and one confusion matrix PNG per variant and classifier."""
    from dinomask.evaluate import recognition

    _write_json(out_dir / "metrics.json", _header("recognition", run) | result)
    files = [out_dir / "metrics.json"]
    categories = result["categories"]
    lines = ["# dinomask eval recognition", "", *_run_lines(run),
             f"Dataset: `{run['dataset']}`. Model: `{run['model']}`. Segmenter: `{result['segmenter']}`. "
             f"Class map: `{run.get('class_map')}`.", "",
             recognition.__doc__.split("\n\n", 1)[1].strip(), "",
             "| category | reference clip | scored clips |", "|---|---|---|"]
    for category in categories:
        ref = result["reference_clips"][category]
        scored = [f["clip"] for f in result["per_frame"] if f["category"] == category]
        lines.append(f"| {cell(category)} | {cell(ref)} | {cell(', '.join(sorted(set(scored))))} |")
    lines += ["", f"References per category: {result['references_per_category']}; k-NN with k = {result['k']}; "
              f"chance = {result['chance']:.3f}.", "",
              "| variant | classifier | accuracy | " + " | ".join(f"acc. {c}" for c in categories) + " | removal mask J |",
              "|---" * (len(categories) + 4) + "|"]
    for variant, by_classifier in result["variants"].items():
        for classifier in recognition.CLASSIFIERS:
            metrics = by_classifier[classifier]
            cells = [_fmt(metrics["per_class_accuracy"][c]) for c in categories]
            lines.append(f"| {cell(variant)} | {cell(classifier)} | {_fmt(metrics['accuracy'])} | " + " | ".join(cells) +
                         f" | {_fmt(by_classifier.get('mask_j'))} |")
            files.append(plots.plot_confusion(np.array(metrics["matrix"]), categories,
                                              out_dir / f"confusion_{_slug(variant)}_{_slug(classifier)}.png",
                                              title=f"{variant}, {classifier}", caption=plot_caption(run)))
    lines += ["", "Plots: " + ", ".join(f"`{p.name}`" for p in files if p.suffix == ".png")]
    lines += _left_out(run)
    lines += _problems(result["problems"])
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return files + [out_dir / "report.md"]


def write_control_report(out_dir: Path, result: dict, run: dict) -> list[Path]:
    from dinomask.evaluate import control

    _write_json(out_dir / "metrics.json", _header("control", run) | result)
    series = {seq: {p: np.array(r["deviation"]) for p, r in pipelines.items()} for seq, pipelines in result["sequences"].items()}
    files = [out_dir / "metrics.json", plots.plot_deviation(series, out_dir / "deviation.png",
                                                            title=f"pan-tilt loop, gain {result['model']['gain']}",
                                                            caption=plot_caption(run))]
    lines = ["# dinomask eval control", "", *_run_lines(run),
             f"Dataset: `{run['dataset']}`. Model: `{run['model']}`. Segmenter: `{result['segmenter']}`.", "",
             "## The loop", "", control.__doc__.split("The model", 1)[1].strip().replace("\n\n", "\n\n"), "",
             "## Results (mean over sequences; units: fraction of the frame)", "",
             "| perception | RMS deviation | max deviation | jitter |", "|---|---|---|---|"]
    for p, m in result["mean_over_sequences"].items():
        lines.append(f"| {cell(p)} | {_fmt(m['rms'])} | {_fmt(m['max'])} | {_fmt(m['jitter'])} |")
    lines += ["", "| sequence | perception | RMS | max | jitter | steps with no measurement |", "|---|---|---|---|---|---|"]
    for seq, pipelines in result["sequences"].items():
        for p, r in pipelines.items():
            lines.append(f"| {cell(seq)} | {cell(p)} | {_fmt(r['rms'])} | {_fmt(r['max'])} | {_fmt(r['jitter'])} | {r['lost']} |")
    lines += ["", "Plot: `deviation.png`"]
    lines += _problems(result["problems"])
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return files + [out_dir / "report.md"]


def _figure(value, spec: str) -> str:
    """A figure for a table, or a dash where the clip gave none (too short to measure)."""
    return "–" if value is None else format(value, spec)


def write_live_report(out_dir: Path, result: dict, run: dict) -> list[Path]:
    """metrics.json (the first schedule's figures at its top level, every schedule under
    ``schedules``), report.md, and one ``live_<sequence>.png`` per sequence."""
    from dinomask.evaluate.live import LIVE_METRICS, plot_sequence

    names = list(result["schedules"])
    first = result["schedules"][names[0]]
    top = {metric: first[metric] for metric in LIVE_METRICS} | {"schedule": names[0]}
    _write_json(out_dir / "metrics.json", _header("live", run) | top | result)
    sequences = list(dict.fromkeys(seq for d in result["schedules"].values() for seq in d["sequences"]))
    files = [out_dir / "metrics.json"] + [plot_sequence(result, seq, out_dir / f"live_{_slug(seq)}.png", run)
                                          for seq in sequences]
    live = run["live"]
    clock = (result.get("cost_model") or f"a simulated clock (key {live['costs_ms'][0]:.0f} ms, flow {live['costs_ms'][1]:.0f} ms)"
             if live["costs_ms"] else "the wall clock of this machine")
    lines = ["# dinomask eval live", "", *_run_lines(run),
             f"Dataset: `{run['dataset']}`. Camera: {live['fps']:g} FPS, "
             f"{'delivered in real time (the newest frame wins)' if live['realtime'] else 'every frame taken'}, on {clock}.",
             "**Oracle: the ground truth on the grid was the patch classifier; the figures are each schedule's "
             "ceiling, with the backbone's real cost.**" if live["oracle"] else "", "",
             "Own-frame J: each shown mask against its own frame. Live J: at each camera frame, the newest mask shown "
             "by then against that frame (what the screen shows), from the first mask on. One frame late: the ground "
             "truth of the frame before against each frame, the live J of a pipeline showing every frame's own mask "
             "one frame late (the best live J can read). The reference frame is played, never scored; frames without "
             "a mask are played and not scored. Key scale: source pixels per patch side of the keys (on the crop "
             "for a crop key). A dash: the clip is too short for that figure.", "",
             "| schedule | shown FPS | latency p50 (ms) | p95 (ms) | own-frame J | own-frame J&F | live J | one frame late "
             "| keyframes | key scale max / mean (px) | dropped (frames a clip, mean) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in result["schedules"].items():
        lines.append(f"| {cell(name)} | {_figure(d['shown_fps'], '.1f')} | {_figure(d['latency_ms_p50'], '.0f')} | "
                     f"{_figure(d['latency_ms_p95'], '.0f')} | {_figure(d['own_frame_j'], '.3f')} | "
                     f"{_figure(d['own_frame_jf'], '.3f')} | {_figure(d['live_j'], '.3f')} | "
                     f"{_figure(d['late_by_one_j'], '.3f')} | {_figure(d['keyframe_share'], '.0%')} | "
                     f"{_figure(d['key_scale_px_max'], '.1f')} / {_figure(d['key_scale_px_mean'], '.1f')} | "
                     f"{_figure(d['dropped'], '.1f')} |")
    lines += ["", "## Coming and going", "",
              "Over the scored frames whose ground truth is empty (the object is gone): the share with any object "
              "pixel on screen. For each return (the first present frame after absent ones): camera frames until the "
              "mask on screen first scores J >= 0.5 (0: on the return frame); missed: returns never found before the "
              "clip ends or the object leaves again. Present live J: live J over the frames where the object is there. "
              "Absent frames and misses are summed over clips, the rest are means; a dash: no clip lost its object. "
              "One frame late: the same figures for the ground truth shown one frame late, the best a screen that "
              "lags the camera by a frame can read.", "",
              "| schedule | absent frames | absent FP rate | re-acquire frames mean / max | missed | present live J "
              "| one frame late: absent FP rate, re-acquire mean |",
              "|---|---|---|---|---|---|---|"]
    for name, d in result["schedules"].items():
        lines.append(f"| {cell(name)} | {_figure(d['absent_frames'], 'd')} | {_figure(d['absent_fp_rate'], '.1%')} | "
                     f"{_figure(d['reacquire_frames_mean'], '.1f')} / {_figure(d['reacquire_frames_max'], 'd')} | "
                     f"{_figure(d['reacquire_missed'], 'd')} | {_figure(d['present_live_j'], '.3f')} | "
                     f"{_figure(d['late_by_one_absent_fp_rate'], '.1%')}, "
                     f"{_figure(d['late_by_one_reacquire_frames_mean'], '.1f')} |")
    objects = [(seq, name, d["sequences"][seq]["objects"]) for seq in sequences for name, d in result["schedules"].items()
               if seq in d["sequences"] and "objects" in d["sequences"][seq]]
    if objects:
        lines += ["", "## Objects", "", "Clips with several objects (a label-map ground truth): each object on its own "
                  "mask; the clip's figures above are the mean over its objects, as DAVIS-2017 scores them.", "",
                  "| sequence | schedule | object | own-frame J | live J | absent FP rate | re-acquire mean | missed |",
                  "|---|---|---|---|---|---|---|---|"]
        for seq, name, per_object in objects:
            for object_id, f in per_object.items():
                lines.append(f"| {cell(seq)} | {cell(name)} | {cell(object_id)} | {_figure(f['own_frame_j'], '.3f')} | "
                             f"{_figure(f['live_j'], '.3f')} | {_figure(f['absent_fp_rate'], '.1%')} | "
                             f"{_figure(f['reacquire_frames_mean'], '.1f')} | {_figure(f['reacquire_missed'], 'd')} |")
    lines += ["", "## Per sequence", "", "| sequence | schedule | shown FPS | p95 (ms) | own-frame J | live J | one frame late "
              "| frames (scored) |", "|---|---|---|---|---|---|---|---|"]
    for seq in sequences:
        for name, d in result["schedules"].items():
            if seq not in d["sequences"]:
                continue
            f = d["sequences"][seq]
            lines.append(f"| {cell(seq)} | {cell(name)} | {_figure(f['shown_fps'], '.1f')} | {_figure(f['latency_ms_p95'], '.0f')} | "
                         f"{_figure(f['own_frame_j'], '.3f')} | {_figure(f['live_j'], '.3f')} | "
                         f"{_figure(f['late_by_one_j'], '.3f')} | {f['frames']} ({f['scored_frames']}) |")
    if result.get("problems"):
        lines += ["", "## Problems", "", *[f"- {problem}" for problem in result["problems"]]]
    lines += ["", "Plots: " + ", ".join(f"`{p.name}`" for p in files[1:])]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return files + [out_dir / "report.md"]
