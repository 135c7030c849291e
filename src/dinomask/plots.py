"""PNG plots for reports. matplotlib is imported inside each function (Agg backend), never at import time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dinomask.composite import SIMILARITY_COLORMAP, SIMILARITY_RANGE


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, caption: str = "") -> Path:
    """Write the figure; ``caption`` (the model, the data, random weights) goes over it, so a
    plot pasted on its own still says what it shows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if caption:
        fig.text(0.5, 1.0, caption, ha="center", va="bottom", fontsize=8,  # above any title: never over an axis
                 color="#b00020" if "RANDOM" in caption else "0.3")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_confusion(matrix: np.ndarray, labels: list[str], path, *, title: str = "", normalize: bool = True,
                   caption: str = "") -> Path:
    """Confusion matrix (rows truth, columns prediction), row-normalised by default, with counts."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    size = max(3.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = f"{shown[i, j]:.2f}\n({int(matrix[i, j])})" if normalize else f"{int(matrix[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path, caption)


def plot_threshold_curves(sweeps: dict[str, dict], path, caption: str = "") -> Path:
    """J (object IoU) against threshold for each swept setting, best threshold marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, sweep in sweeps.items():
        ax.plot(sweep["thresholds"], sweep["j"], marker="o", markersize=3, label=f"{name} (best {sweep['best_threshold']:.2f})")
        ax.axvline(sweep["best_threshold"], linestyle=":", alpha=0.5)
    ax.axvline(0.5, color="grey", linestyle="--", alpha=0.6, label="0.5 (method)")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylabel("J (object IoU)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, caption)


def plot_heatmaps(examples: list[dict], path, caption: str = "") -> Path:
    """One row per example (one per sequence): frame, patch similarity (with its colour bar),
    predicted mask, ground truth."""
    import cv2

    plt = _pyplot()
    rows = len(examples)
    fig, axes = plt.subplots(rows, 4, figsize=(13, 2.1 * rows + 0.5), squeeze=False)
    for row, example in zip(axes, examples):
        image = example["image"]
        similarity = cv2.resize(example["similarity"].astype(np.float32), (image.shape[1], image.shape[0]),
                                interpolation=cv2.INTER_LINEAR)
        row[0].imshow(image)
        row[0].set_title(f"{example['sequence']}/{example['frame']}", fontsize=8)
        shown = row[1].imshow(similarity, cmap=SIMILARITY_COLORMAP, vmin=SIMILARITY_RANGE[0], vmax=SIMILARITY_RANGE[1])
        row[1].set_title(f"cosine similarity ({example['setting']})", fontsize=8)
        fig.colorbar(shown, ax=row[1], fraction=0.046, pad=0.02)
        for ax, panel, title in ((row[2], example["mask"], "predicted"), (row[3], example["truth"], "ground truth")):
            ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    return _save(fig, path, caption)


def plot_setting_bars(dataset: dict[str, dict[str, float]], path, metric: str = "jf", caption: str = "") -> Path:
    """Horizontal bars of one metric per setting."""
    plt = _pyplot()
    names = list(dataset)
    values = [dataset[n][metric] for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(names) + 1))
    ax.barh(range(len(names)), values, color="#4c72b0")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel({"jf": "J&F (DAVIS)", "j_mean": "J (object IoU)"}.get(metric, metric))
    for i, v in enumerate(values):
        ax.text(min(v, 0.9) + 0.01, i, f"{v:.3f}", va="center", fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path, caption)


def plot_deviation(series: dict[str, dict[str, np.ndarray]], path, *, title: str = "", caption: str = "") -> Path:
    """Control deviation over time: one panel per sequence, one line per pipeline.

    Args:
        series: sequence -> pipeline -> 1-D deviation per step (fraction of frame size).
    """
    plt = _pyplot()
    rows = len(series)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.4 * rows + 0.4), squeeze=False)
    for ax, (sequence, lines) in zip(axes[:, 0], series.items()):
        for name, values in lines.items():
            ax.plot(np.arange(len(values)), values, marker=".", label=name)
        ax.set_title(sequence, fontsize=9)
        ax.set_ylabel("deviation\n(frame fraction)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("control step (frame)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, caption)


def plot_caption(run: dict) -> str:
    """One line under a plot's title: the model, the data, and whether the weights are random (a
    plot pasted on its own must still say what it shows)."""
    models = ", ".join(c.get("backbone", source) for source, c in run.get("conditions", {}).items()) or "?"
    random = any(c.get("random_weights") for c in run.get("conditions", {}).values())
    live = run.get("live") or {}
    weights = ("oracle: the ground truth as the patch classifier" if live.get("oracle")
               else "RANDOM WEIGHTS: the masks mean nothing" if random else "")
    return f"model {models}; data {Path(str(run.get('dataset', '?'))).name}" + (f"; {weights}" if weights else "")
