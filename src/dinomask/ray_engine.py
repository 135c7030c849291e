"""``--engine ray``: the batch work of ``dinomask remove`` on Ray Data, on one machine or a cluster.

Work items (an image, or a whole video) flow as Ray Data batches through a pool of actors.
Each actor loads the model and the references once, then runs exactly the local engine's
per-item code (:func:`dinomask.batch.process_item`), so both engines write the same
bytes. A video is one work item: its frames stay in order on one actor, temporal
smoothing runs as it does locally, and the output is the same mp4 (or PNG frames with
``timestamps.json``). Parallelism comes from many files, the shape of an archive.

Resumable: items whose output already exists are skipped before anything is sent, and
outputs only appear under their final name once complete (temp file + rename; a
``.complete`` marker for frame folders), so a rerun after a crash continues.

Needs the ``ray`` extra: ``pip install 'dinomask[ray]'``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
from tqdm import tqdm

from dinomask.batch import BatchReport, OutputOptions, output_complete, process_item
from dinomask.errors import DinomaskError
from dinomask.files import WorkItem
from dinomask.reference import Reference
from dinomask.segmenter import SegmenterConfig


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run.

    Attributes:
        address: ``None`` starts a local Ray; ``auto`` joins a running cluster; ``ray://host:port`` a remote one.
        actors: actor count; default: one per GPU when the model runs on CUDA, else one per CPU.
        batch_size: work items per Ray Data batch; default 4.
        cpus_per_actor: CPUs each actor reserves (and uses as its thread count).
    """

    address: str | None = None
    actors: int | None = None
    batch_size: int | None = None
    cpus_per_actor: float = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    """Everything an actor needs to build its own segmenter (picklable)."""

    model: str
    device: str
    dtype: str
    runtime: str
    references: tuple[Reference, ...]
    config: SegmenterConfig
    options: OutputOptions
    refiner: str | None = None  # a SamModel folder when config.refine is on


def _limit_threads(threads: int) -> None:
    """Give this actor's torch and ONNX Runtime exactly the CPUs it reserved."""
    import torch

    os.environ["DINOMASK_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class RemoveWorker:
    """A Ray Data actor: loads the model once, then removes backgrounds batch after batch."""

    def __init__(self, spec: WorkerSpec, threads: int):
        from dinomask.backbones import load_backbone
        from dinomask.segmenter import Segmenter

        _limit_threads(threads)
        backbone = load_backbone(spec.model, device=spec.device, dtype=spec.dtype, runtime=spec.runtime)
        refiner = None
        if spec.config.refine.enabled:
            from dinomask.refine import SamRefiner

            refiner = SamRefiner.load(spec.refiner, spec.device)
        self.segmenter = Segmenter(backbone, list(spec.references), spec.config, refiner=refiner)
        self.options = spec.options

    def __call__(self, batch: dict) -> dict:
        out = {"source": [], "output": [], "frames": [], "error": [], "seconds": []}
        for source, kind, output in zip(batch["source"], batch["kind"], batch["output"]):
            item = WorkItem(Path(str(source)), str(kind), Path(str(output)))
            started = time.perf_counter()
            frames, error = 0, ""
            try:
                frames = process_item(self.segmenter, item, self.options)
            except (DinomaskError, OSError, ValueError, cv2.error) as exc:  # OpenCV's own errors fail one file too
                error = str(exc).strip() or exc.__class__.__name__
            out["source"].append(str(source))
            out["output"].append(str(output))
            out["frames"].append(frames)
            out["error"].append(error)
            out["seconds"].append(time.perf_counter() - started)
        return out


def _ray():
    try:
        import ray
    except ImportError:
        raise DinomaskError("--engine ray needs Ray: pip install 'dinomask[ray]'") from None
    return ray


def init_ray(options: RayOptions) -> None:
    """Start or join Ray (once per process)."""
    ray = _ray()
    if ray.is_initialized():
        return
    import logging

    import signal
    import threading

    kwargs = {"address": options.address} if options.address else {"num_cpus": os.cpu_count() or 1}
    in_main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING,
             **kwargs)
    for sig, handler in handlers.items():  # Ray's own handlers dump its C++ stack on SIGTERM: ours end the run cleanly
        if handler is not None:
            signal.signal(sig, handler)
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Our own progress bar and summary replace Ray Data's progress logging."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)


def plan_pool(device: str, options: RayOptions) -> tuple[int, int, float, float]:
    """(actors, batch_size, cpus per actor, gpus per actor) from the options and the cluster."""
    ray = _ray()
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0.0)
    on_gpu = device.startswith("cuda") or (device == "auto" and gpus >= 1)
    if on_gpu and gpus >= 1:
        actors = options.actors or int(gpus)
        return actors, options.batch_size or 4, options.cpus_per_actor, 1.0
    cpus = resources.get("CPU", 1.0)
    actors = options.actors or max(1, int(cpus // options.cpus_per_actor))
    return actors, options.batch_size or 4, options.cpus_per_actor, 0.0


def remove_batch_ray(
    spec: WorkerSpec, items: Sequence[WorkItem], options: RayOptions, *, show_progress: bool = True
) -> BatchReport:
    """The Ray engine's counterpart of :func:`dinomask.batch.remove_batch` (same report)."""
    ray = _ray()
    report = BatchReport(planned=len(items))
    started = time.perf_counter()
    todo = []
    for item in items:
        if output_complete(item) and not spec.options.overwrite:
            report.skipped.append(item.output)
        else:
            todo.append(item)
    if todo:
        init_ray(options)
        actors, batch_size, cpus, gpus = plan_pool(spec.device, options)
        actors = min(actors, len(todo))
        rows = [{"source": str(i.source), "kind": i.kind, "output": str(i.output)} for i in todo]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), actors * 4))).map_batches(
            RemoveWorker, fn_constructor_kwargs={"spec": spec, "threads": max(1, int(cpus))},
            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus, num_gpus=gpus,
            batch_format="default",
        )
        try:
            with tqdm(total=len(rows), desc=f"removing background (ray, {actors} actors)", unit="file",
                      disable=not show_progress) as progress:
                for row in dataset.iter_rows():
                    if row["error"]:
                        report.failed[row["source"]] = row["error"]
                    else:
                        report.written.append(Path(row["output"]))
                        report.frames += int(row["frames"])
                    progress.update(1)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stop the actors, then the caller prints the summary
            report.interrupted = exc
            ray.shutdown()
    report.seconds = time.perf_counter() - started
    return report


class EvalWorker:
    """A Ray Data actor for ``eval masks``: builds the plan's predictors once, scores whole sequences."""

    def __init__(self, plan, dataset, refs: dict, sweep: dict, max_frames, threads: int):
        from dinomask.evaluate.plan import build_predictors

        _limit_threads(threads)
        self.built = build_predictors(plan)
        self.dataset, self.refs, self.sweep, self.max_frames = dataset, refs, sweep, max_frames

    def __call__(self, batch: dict) -> dict:
        import pickle

        from dinomask.evaluate.masks import example_setting, score_sequence

        names = list(self.built.predictors)
        out = {"index": [], "scores": []}
        for index in batch["index"]:
            part = score_sequence(self.dataset.sequences[int(index)], self.built.predictors, self.refs,
                                  sweep=self.sweep, max_frames=self.max_frames, example_setting=example_setting(names))
            out["index"].append(int(index))
            out["scores"].append(pickle.dumps(part))
        return out


def evaluate_masks_ray(dataset, plan, built, options: RayOptions, *, max_frames=None, show_progress: bool = True):
    """``eval masks`` with sequences spread over a Ray Data actor pool; the same numbers as locally.

    Each sequence is scored whole on one actor (references, frame order and temporal
    smoothing as in the local engine); the driver merges the parts in dataset order.
    """
    import pickle

    from dinomask.evaluate.masks import aggregate

    ray = _ray()
    if not dataset.sequences:
        raise DinomaskError(f"{dataset.root}: no sequence with labelled frames to evaluate")
    init_ray(options)
    actors, _, _, _ = plan_pool("cpu", options)  # eval actors reserve CPUs only, as before
    actors = min(actors, len(dataset.sequences))
    names = list(built.predictors)
    refs = {n: built.refs[n] for n in names}
    rows = [{"index": i} for i in range(len(dataset.sequences))]
    pipeline = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        EvalWorker, fn_constructor_kwargs={"plan": plan, "dataset": dataset, "refs": refs, "sweep": built.sweep,
                                           "max_frames": max_frames, "threads": max(1, int(options.cpus_per_actor))},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=options.cpus_per_actor,
        batch_format="default",
    )
    parts = {}
    with tqdm(total=len(rows), desc=f"eval masks (ray, {actors} actors)", unit="sequence", disable=not show_progress) as bar:
        for row in pipeline.iter_rows():
            parts[int(row["index"])] = pickle.loads(row["scores"])
            bar.update(1)
    return aggregate(dataset, names, [parts[i] for i in sorted(parts)], built.sweep)
