"""This project beside the peer video trackers on the same CPU and the same frames (issue 33 item 5):
SAM 2.1-tiny (transformers' ``Sam2VideoModel``) and EdgeTAM (``EdgeTamVideoModel``, RepViT-M1
through timm) at their published shapes, random weights (speed does not depend on them), fp32,
streaming one frame at a time as a camera would, the first frame's ground-truth mask as the
prompt; beside this project's key (the backbone and the mask of one frame, ``Segmenter.predict``
with keyframes off, the default runtime) and its live loop (``dinomask live --realtime`` on the
whole clip, 24 FPS).

Each system runs in a fresh process, one after another and this project's key twice (first and
last, so a machine that drifts shows), so each peak RSS is its own. For each: parameters, input
size, median and p90 ms per frame, FPS, peak RSS, RSS after every frame (a peer whose memory
grows with frames shows it: SAM 2 keeps every frame's outputs in its session), and the ratio
of its ms per frame to this project's key.

    python benchmarks/peers.py                                  # breakdance, 24 frames, 854x480
    python benchmarks/peers.py --clip parkour --frames 24 --plot peers.png
    python benchmarks/peers.py --peers-python ../peers-venv/bin/python   # where timm is installed

EdgeTAM's RepViT backbone comes from timm, which needs torchvision; this project's environment
(torch 2.13 CPU) has no matching torchvision wheel, so ``--peers-python`` runs the peers in
another environment (e.g. ``python -m venv ../peers-venv && ../peers-venv/bin/pip install
torch==2.14.1 torchvision==0.29.1 timm transformers``). Without timm EdgeTAM's row says so.
SAM 2.1 runs with transformers alone: the frames are prepared as its processor does (1024x1024
bilinear, ImageNet mean and std), without its torchvision-based processor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
PEERS = ("sam2.1-tiny", "edgetam")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peer_model(name: str, tiny: bool = False):
    """(model, input side) of a peer at its published shape, random weights; ``tiny``: a few
    layers of each part at the same widths (the suite's two-frame check)."""
    import torch

    torch.manual_seed(0)
    if name == "sam2.1-tiny":
        from transformers import Sam2VideoConfig, Sam2VideoModel

        config = Sam2VideoConfig()  # its defaults are sam2.1-hiera-tiny's (39.0 M parameters)
        if tiny:
            config.vision_config.backbone_config.blocks_per_stage = [1, 1, 1, 1]
            config.vision_config.backbone_config.global_attention_blocks = []
            config.memory_attention_num_layers = 1
        return Sam2VideoModel(config).eval(), config.image_size
    if name == "edgetam":
        from transformers import EdgeTamVideoConfig, EdgeTamVideoModel

        if tiny:  # the suite has no timm: EdgeTAM's heads on SAM 2's Hiera at a few layers
            config = EdgeTamVideoConfig()
            config.vision_config.backbone_config.blocks_per_stage = [1, 1, 1, 1]
            config.vision_config.backbone_config.global_attention_blocks = []
            config.memory_attention_num_layers = 1
        else:
            try:
                import timm  # noqa: F401
            except ImportError as exc:
                raise RuntimeError(f"EdgeTAM's RepViT-M1 backbone needs timm (and torchvision): {exc}") from None
            from transformers import TimmWrapperConfig
            from transformers.models.edgetam.configuration_edgetam import EdgeTamVisionConfig

            backbone = TimmWrapperConfig(architecture="repvit_m1",
                                         model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
            config = EdgeTamVideoConfig(vision_config=EdgeTamVisionConfig(backbone_config=backbone).to_dict())
        return EdgeTamVideoModel(config).eval(), config.image_size
    raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")


def prepare(image: np.ndarray, side: int):
    """``H x W x 3`` uint8 RGB -> ``3 x side x side`` float32, as SAM 2's processor does."""
    import cv2
    import torch

    resized = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return torch.from_numpy(((resized - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy())


def time_peer(name: str, frames: list[np.ndarray], prompt: np.ndarray, tiny: bool = False) -> dict:
    """Stream ``frames`` (RGB uint8) through a peer, the first frame prompted with ``prompt``
    (``H x W`` bool); ms per frame (preparation, model, the mask at the frame's size)."""
    import torch
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    model, side = peer_model(name, tiny)
    height, width = frames[0].shape[:2]
    session = Sam2VideoInferenceSession(video_height=height, video_width=width, inference_device="cpu",
                                        dtype=torch.float32)
    mask = torch.from_numpy(prompt.astype(np.float32))[None, None]
    mask = (torch.nn.functional.interpolate(mask, size=(side, side), mode="bilinear", antialias=True) >= 0.5).float()
    session.add_mask_inputs(session.obj_id_to_idx(1), 0, mask)
    session.obj_with_new_inputs = [1]  # what the processor's add_inputs_to_inference_session does
    times, rss, areas = [], [], []
    with torch.inference_mode():
        for index, image in enumerate(frames):
            started = time.perf_counter()
            output = model(inference_session=session, frame=prepare(image, side))
            shown = torch.nn.functional.interpolate(output.pred_masks, size=(height, width), mode="bilinear") > 0
            times.append((time.perf_counter() - started) * 1e3)
            rss.append(_rss_mib())
            areas.append(float(shown.float().mean()))
    return {"system": name, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "input": f"{side}x{side}", "ms": times, "rss_mib": rss, "peak_rss_mib": _peak_mib(), "mask_area": areas}


def time_key(frames: list[np.ndarray], prompt: np.ndarray, model: str) -> dict:
    """This project's key: ``Segmenter.predict`` on each whole frame, keyframes off, the default
    preset and runtime (ONNX int8 on CPU), the reference made from the first frame and ``prompt``."""
    from dinomask import Reference, Segmenter, load_backbone

    backbone = load_backbone(model, busy_wait=True)
    reference = Reference.from_images(backbone, [frames[0]], masks=[prompt.astype(np.uint8) * 255])
    segmenter = Segmenter(backbone, reference)  # the default preset as a file runs it: no keyframes, no crop
    segmenter.predict(frames[0])  # the runtime's first call builds its plan
    times, rss = [], []
    for image in frames:
        started = time.perf_counter()
        result = segmenter.predict(image)
        times.append((time.perf_counter() - started) * 1e3)
        rss.append(_rss_mib())
    grid = result.grid
    return {"system": "dinomask key", "parameters_m": _parameters_m(Path(model)),
            "input": f"{grid[1] * 14}x{grid[0] * 14}", "ms": times, "rss_mib": rss, "peak_rss_mib": _peak_mib()}


def _parameters_m(folder: Path) -> float | None:
    """Millions of parameters in a model folder's safetensors files (None for a hub name)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    total = 0
    for path in files:
        with safe_open(str(path), "np") as f:
            total += sum(int(np.prod(f.get_slice(name).get_shape())) for name in f.keys())
    return total / 1e6 if files else None


def load_clip(root: Path, clip: str, count: int) -> tuple[list[np.ndarray], np.ndarray, Path]:
    from PIL import Image

    folder = root / "JPEGImages" / "480p" / clip
    paths = sorted(folder.glob("*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"no frames in {folder}")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    prompt = np.asarray(Image.open(sorted((root / "Annotations" / "480p" / clip).glob("*.png"))[0]).convert("L")) > 0
    return frames, prompt, folder


def worker(args) -> int:
    frames, prompt, _ = load_clip(args.data, args.clip, args.frames)
    if args.worker == "key":
        figures = time_key(frames, prompt, args.model)
    else:
        try:
            figures = time_peer(args.worker, frames, prompt, args.tiny)
        except RuntimeError as exc:
            figures = {"system": args.worker, "error": str(exc)}
    import torch

    print(json.dumps({**figures, "torch": torch.__version__}))
    return 0


def run_worker(python: str, name: str, args, extra: list[str]) -> dict:
    command = [python, __file__, "--worker", name, "--data", str(args.data), "--clip", args.clip,
               "--frames", str(args.frames), *extra]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        return {"system": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(row: dict, key_ms: float | None) -> dict:
    if "error" in row:
        return row
    ms = np.asarray(row["ms"][1:] if len(row["ms"]) > 2 else row["ms"])  # the first frame builds caches
    median = float(np.median(ms))
    steady = row["ms"][-max(1, len(row["ms"]) // 3):]  # SAM 2's memory fills over its first 7 frames
    return {**row, "median_ms": median, "last_third_ms": float(np.median(steady)), "p90_ms": float(np.percentile(ms, 90)), "fps": 1000 / median,
            "rss_growth_mib": row["rss_mib"][-1] - row["rss_mib"][0],
            "ratio_to_key": median / key_ms if key_ms else None}


def plot(rows: list[dict], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = 0
    for row in rows:
        if "error" in row:
            continue
        label = row["system"]
        if label == "dinomask key":
            keys += 1
            label += " (first run)" if keys == 1 else " (last run)"
        frames = np.arange(1, len(row["ms"]) + 1)
        axes[0].plot(frames, row["ms"], marker="o", label=label)
        axes[1].plot(frames, row["rss_mib"], marker="o", label=label)
    axes[0].set(xlabel="frame", ylabel="ms per frame", yscale="log", title="time per streamed frame")
    axes[1].set(xlabel="frame", ylabel="RSS (MiB)", title="process memory after each frame")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "davis-motion")
    parser.add_argument("--clip", default="breakdance")
    parser.add_argument("--frames", type=int, default=24, help="frames streamed (SAM 2's memory is full after 7)")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--peers-python", default=sys.executable, help="the Python that runs the peers (timm for EdgeTAM)")
    parser.add_argument("--model", default=None, help="this project's model folder (default: a random ViT-S/14-reg)")
    parser.add_argument("--tiny", action="store_true", help="a few layers of each peer (the suite's check), no live loop")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if not (args.data / "JPEGImages" / "480p" / args.clip).is_dir():
        raise SystemExit(f"needs {args.data / 'JPEGImages' / '480p' / args.clip} (a DAVIS-layout clip)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import describe

    with tempfile.TemporaryDirectory(prefix="dinomask-peers-") as tmp:
        work = Path(tmp)
        if args.model is None:
            from dinomask.backbones import random_backbone_dir

            sizes = {"hidden_size": 64, "layers": 2} if args.tiny else {"arch": "dinov2_vits14_reg"}
            args.model = str(random_backbone_dir(work / "model", **sizes))
        extra = ["--model", args.model] + (["--tiny"] if args.tiny else [])
        rows = [run_worker(sys.executable, "key", args, extra)]
        rows += [run_worker(args.peers_python, name, args, extra) for name in args.peers.split(",")]
        rows.append(run_worker(sys.executable, "key", args, extra))
        loop = None
        if not args.tiny:  # the live loop on the whole clip, as benchmarks/live_command.py plays it
            from live_command import run_clip

            _, _, folder = load_clip(args.data, args.clip, 1)
            prompt = sorted((args.data / "Annotations" / "480p" / args.clip).glob("*.png"))[0]
            loop = run_clip(folder, prompt, Path(args.model), work, output=False, load="quiet")
    keys = [r for r in rows if r["system"] == "dinomask key" and "error" not in r]
    key_ms = float(np.median([np.median(r["ms"][1:] if len(r["ms"]) > 2 else r["ms"]) for r in keys])) if keys else None
    rows = [summarise(r, key_ms) for r in rows]
    machine = describe()
    print(f"machine: {machine}")
    print(f"{args.clip} ({args.data.name}), {args.frames} frames at {rows[0].get('input', '?')} for the key, streamed one "
          "at a time; random weights at the published shapes; fp32 peers, this project's default runtime")
    print("| system | parameters | input | median ms / frame (p90) | last third's median | FPS | ms / frame over the key's "
          "| peak RSS | RSS growth over the frames | torch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['system']} | – | – | not run: {row['error']} | – | – | – | – | – | – |")
            continue
        params = f"{row['parameters_m']:.1f} M" if row.get("parameters_m") else "–"
        print(f"| {row['system']} | {params} | {row['input']} | {row['median_ms']:,.0f} ({row['p90_ms']:,.0f}) | "
              f"{row['last_third_ms']:,.0f} | {row['fps']:.2f} | {row['ratio_to_key']:.1f}x | {row['peak_rss_mib']:,.0f} MiB | {row['rss_growth_mib']:+.0f} MiB | "
              f"{row.get('torch', '?')} |")
    if loop is not None:
        print(f"| dinomask live (whole clip, 24 FPS camera) | – | 854x480 | {1000 / loop['fps']:.0f} shown-frame interval, "
              f"p95 latency {loop['latency_ms_p95']:.0f} | – | {loop['fps']:.1f} | – | – | {loop['dropped']} of {loop['delivered']} "
              f"frames dropped, backbone on {loop['keys']:.0%} | – |")
    if args.plot:
        plot(rows, args.plot, f"{args.clip}, random weights at the published shapes; {machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows, "live": loop}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
