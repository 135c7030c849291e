"""Hours without drift: ``dinomask live`` on a looping camera stream and ``dinomask serve`` with
streaming WebSocket clients and reference teaching, for a given time, sampled every few seconds.

What runs (two real processes, as users start them):

* a camera: a loopback MJPEG stream (``multipart/x-mixed-replace``) playing the DAVIS dog clip
  in a loop at 24 FPS; ``live`` reads it as it would an IP camera (the newest frame wins);
* ``live --stats-every``: taught over stdin while it runs (a view added, then undone, the
  threshold moved, a reset), its JSON lines give FPS and capture-to-output latency;
* ``serve``: ``--clients`` WebSocket streams sending frames back to back, and a teacher that
  clicks, undoes, resets, and makes, downloads and deletes a second reference.

Sampled every ``--interval`` s for each process: RSS, open file descriptors, threads; the
server's queue depth; latency p50/p95 (live: capture to output; serve: frame sent to result
received). It fails (exit 1) on growth after the warm-up (the first tenth, at least 10 s):

* RSS: median of the last tenth over the value at the end of the warm-up by >= 50 MiB, or,
  on runs whose second half lasts 5 minutes or more, a slope over the second half > 1 MiB/min;
* file descriptors or threads: the last tenth's median above the first half's maximum (a
  leak grows the typical count; a connection open for a moment does not);
* latency: on runs of 5 minutes or more, the last tenth's median p95 over 1.5x the first
  tenth's (and by more than 20 ms, so that a few ms of jitter on a tiny model is not called
  drift). A shorter run reports both figures but does not judge them: its tenths are a few
  samples of a wall clock, and another program on the machine moves them (the 60 s test on a
  busy CI machine read 37 then 64 ms with no growth anywhere else).

Writes ``soak.json`` (every sample) and ``soak.png`` (the curves) to ``--out``.

    python benchmarks/soak.py --minutes 30                     # true ViT-S/14-reg shape, default runtime
    python benchmarks/soak.py --seconds 60 --arch tiny         # what the test suite runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_DOG = ROOT.parent / "shared" / "data" / "davis-live" / "JPEGImages" / "480p" / "dog"
EXAMPLE = ROOT / "examples" / "dog"
RSS_GROWTH_MB = 50.0
RSS_SLOPE_MB_PER_MIN = 1.0
LATENCY_RATIO = 1.5
LATENCY_FLOOR_MS = 20.0
LATENCY_MIN_SECONDS = 300.0  # shorter runs report latency without judging it (wall clock)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clip_jpegs() -> list[bytes]:
    """The dog clip as JPEG bytes: every frame of davis-live where ../shared is there, else the
    bundled example's frames."""
    folder = SHARED_DOG if SHARED_DOG.is_dir() else EXAMPLE / "frames"
    return [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]


class Camera:
    """A loopback MJPEG camera playing ``frames`` in a loop at ``fps``, to every client."""

    def __init__(self, frames: list[bytes], fps: float = 24.0):
        stop = self.stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                index, next_at = 0, time.monotonic()
                try:
                    while not stop.is_set():
                        jpeg = frames[index % len(frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        index += 1
                        next_at += 1.0 / fps
                        time.sleep(max(0.0, next_at - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()


def dinomask(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dinomask.cli", *args], **popen)


def prepare(work: Path, arch: str, runtime: str) -> tuple[Path, Path]:
    """A random-weight model of ``arch`` (``tiny`` for a 2-block test model) and the example's reference."""
    from dinomask.backbones import random_backbone_dir

    model = (random_backbone_dir(work / "model", hidden_size=64, layers=2) if arch == "tiny"
             else random_backbone_dir(work / "model", arch=arch))
    reference = work / "dog.npz"
    done = subprocess.run([sys.executable, "-m", "dinomask.cli", "reference", str(EXAMPLE / "reference.jpg"), "--mask",
                           str(EXAMPLE / "reference_mask.png"), "-o", str(reference), "--model", str(model),
                           "--runtime", runtime, "--label", "dog"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"soak: could not make the reference:\n{done.stderr}")
    return model, reference


# ----------------------------------------------------------------------------- the live process


class LiveRun:
    """``dinomask live`` on the camera, taught over stdin, its JSON stats lines collected."""

    def __init__(self, camera: Camera, reference: Path, work: Path, runtime: str, interval: float):
        self.process = dinomask("live", "-r", str(reference), "--source", camera.url, "--no-window",
                                "--save-ref", str(work / "taught.npz"), "--stats-every", str(interval),
                                "--retry-seconds", "10", "--runtime", runtime,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[dict] = []
        self.stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._teach, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def _teach(self) -> None:
        """A view added and undone, the threshold moved and back, a reset: again and again."""
        script = ["a", "u", "+", "-", "a", "r"]
        step = 0
        while not self.stop.wait(15.0):
            try:
                self.process.stdin.write(script[step % len(script)] + "\n")
                self.process.stdin.flush()
            except (BrokenPipeError, OSError):
                return
            step += 1

    def latest(self, since: float) -> dict | None:
        return self.lines[-1] if self.lines else None

    def close(self) -> tuple[int, str]:
        self.stop.set()
        self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err


# ----------------------------------------------------------------------------- the serve process


class ServeRun:
    """``dinomask serve`` with streaming WebSocket clients and a teacher, in one asyncio thread."""

    def __init__(self, model: Path, runtime: str, clients: int, frames: list[bytes], extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = dinomask("serve", "--model", str(model), "--port", str(self.port), "--runtime", runtime,
                                "--queue-size", str(2 * clients + 2), *extra, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.frames, self.clients = frames, clients
        self.latencies: list[tuple[float, float]] = []  # (monotonic time, ms)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._wait_ready()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"soak: serve exited: {self.process.stderr.read()[-2000:]}")
            try:
                httpx.get(f"{self.base}/v1/health", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise SystemExit("soak: serve did not answer within 300 s")

    def health(self) -> dict:
        import httpx

        try:
            return httpx.get(f"{self.base}/v1/health", timeout=10).json()
        except httpx.HTTPError as exc:
            self.errors.append(f"health: {exc}")
            return {}

    def _files(self, index: int = 0) -> dict:
        reference = EXAMPLE / "reference.jpg"
        return {"image": ("dog.jpg", reference.read_bytes(), "image/jpeg"),
                "mask": ("dog.png", (EXAMPLE / "reference_mask.png").read_bytes(), "image/png")}

    async def _main(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.base, timeout=60) as http:
            made = await http.post("/v1/references", files=self._files(), data={"label": "dog"})
            ref = made.json()["id"]
            await asyncio.gather(*(self._stream(ref, i) for i in range(self.clients)), self._teacher(http, ref))

    async def _stream(self, ref: str, offset: int) -> None:
        import websockets

        url = self.base.replace("http", "ws") + f"/v1/stream?reference={ref}"
        index = offset * 7
        while not self.stop.is_set():
            try:
                async with websockets.connect(url, max_size=None) as ws:
                    while not self.stop.is_set():
                        sent = time.monotonic()
                        await ws.send(self.frames[index % len(self.frames)])
                        stats = json.loads(await ws.recv())
                        if "error" in stats:
                            self.errors.append(f"stream: {stats}")
                            await asyncio.sleep(0.2)
                            continue
                        await ws.recv(), await ws.recv()
                        self.latencies.append((time.monotonic(), (time.monotonic() - sent) * 1e3))
                        index += 1
            except (OSError, websockets.WebSocketException) as exc:
                self.errors.append(f"stream reconnect: {exc}")
                await asyncio.sleep(1.0)

    async def _teacher(self, http, ref: str) -> None:
        """Clicks, undo, reset; a second reference made, downloaded and deleted: again and again."""
        frame = ("f.jpg", self.frames[len(self.frames) // 2], "image/jpeg")
        step = 0
        while not self.stop.is_set():
            await asyncio.sleep(10.0)
            try:
                action = step % 4
                if action == 0:
                    await http.post(f"/v1/references/{ref}/points", files={"image": frame},
                                    data={"points": "[[0.5, 0.5]]", "kind": "object"})
                elif action == 1:
                    await http.post(f"/v1/references/{ref}/undo")
                elif action == 2:
                    await http.post(f"/v1/references/{ref}/points", files={"image": frame},
                                    data={"points": "[[0.05, 0.05]]", "kind": "background"})
                    await http.post(f"/v1/references/{ref}/reset")
                else:
                    other = (await http.post("/v1/references", files=self._files(), data={"label": "狗"})).json()["id"]
                    await http.get(f"/v1/references/{other}/download")
                    await http.delete(f"/v1/references/{other}")
            except (httpx_errors() + (KeyError, ValueError)) as exc:
                self.errors.append(f"teacher: {exc!r}")
            step += 1

    def close(self) -> int:
        self.stop.set()
        self.thread.join(timeout=30)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.process.returncode


def httpx_errors() -> tuple:
    import httpx

    return (httpx.HTTPError,)


# ----------------------------------------------------------------------------- sampling and judging


def process_sample(pid: int) -> dict:
    import psutil

    process = psutil.Process(pid)
    return {"rss_mb": process.memory_info().rss / 2**20, "fds": process.num_fds(), "threads": process.num_threads()}


def percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def judge(samples: list[dict], key: str, warmup: float, duration: float) -> dict:
    """The growth checks for one process's samples (see the module docstring)."""
    rows = [s for s in samples if s[key] is not None and s["t"] >= warmup]
    if len(rows) < 4:
        return {"ok": False, "why": "too few samples after the warm-up"}
    t = np.array([s["t"] for s in rows])
    rss = np.array([s[key]["rss_mb"] for s in rows])
    half = t >= (warmup + t[-1]) / 2
    tenth = max(duration / 10, 1e-9)
    last_tenth, first_tenth = t >= t[-1] - tenth, t <= warmup + tenth
    growth = float(np.median(rss[last_tenth]) - rss[0])
    slope = float(np.polyfit(t[half] / 60, rss[half], 1)[0]) if half.sum() >= 2 else 0.0
    judged_slope = (t[half][-1] - t[half][0]) >= 300
    judged_latency = duration >= LATENCY_MIN_SECONDS
    fds = np.array([s[key]["fds"] for s in rows])
    threads = np.array([s[key]["threads"] for s in rows])
    early = ~half
    p95 = np.array([s[key].get("latency_ms_p95") or np.nan for s in rows], float)
    first_p95 = float(np.nanmedian(p95[first_tenth])) if np.isfinite(p95[first_tenth]).any() else float("nan")
    last_p95 = float(np.nanmedian(p95[last_tenth])) if np.isfinite(p95[last_tenth]).any() else float("nan")
    checks = {
        "rss_growth_mb": (round(growth, 1), growth < RSS_GROWTH_MB),
        "rss_slope_mb_per_min_second_half": (round(slope, 3), slope <= RSS_SLOPE_MB_PER_MIN or not judged_slope),
        "fds_first_half_max_last_tenth_median": ((int(fds[early].max()), float(np.median(fds[last_tenth]))),
                                                 np.median(fds[last_tenth]) <= fds[early].max()),
        "threads_first_half_max_last_tenth_median": ((int(threads[early].max()), float(np.median(threads[last_tenth]))),
                                                     np.median(threads[last_tenth]) <= threads[early].max()),
        "latency_p95_first_last_ms": ((round(first_p95, 1), round(last_p95, 1)),
                                      not judged_latency
                                      or not (last_p95 > LATENCY_RATIO * first_p95 and last_p95 - first_p95 > LATENCY_FLOOR_MS)),
    }
    return {"ok": all(ok for _, ok in checks.values()), "slope_judged": judged_slope, "latency_judged": judged_latency,
            "checks": {name: {"value": value, "ok": bool(ok)} for name, (value, ok) in checks.items()}}


def plot(samples: list[dict], path: Path, warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    for key, colour in (("live", "tab:blue"), ("serve", "tab:orange")):
        rows = [s for s in samples if s.get(key)]
        t = [s["t"] / 60 for s in rows]
        for ax, field, label in zip(axes, ("rss_mb", "fds", "threads", "latency_ms_p95"),
                                    ("RSS (MiB)", "open file descriptors", "threads", "latency p95 (ms)")):
            ax.plot(t, [s[key].get(field) for s in rows], color=colour, label=key)
            ax.set_ylabel(label)
    for ax in axes:
        ax.axvline(warmup / 60, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    axes[0].set_title("dinomask soak: live on a looping 24 FPS camera, serve with streaming clients and teaching")
    axes[-1].set_xlabel("minutes (dotted: end of warm-up)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--clients", type=int, default=3, help="WebSocket streaming clients of serve")
    parser.add_argument("--arch", default="dinov2_vits14_reg", help="random-weight model shape, or 'tiny'")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--which", default="live,serve", help="live, serve or both")
    parser.add_argument("--serve-args", default="", help="more options for serve, e.g. '--threads 1'")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "soak-out")
    args = parser.parse_args(argv)
    duration = args.seconds if args.seconds is not None else 60 * (args.minutes if args.minutes is not None else 30)
    which = set(args.which.split(","))
    warmup = max(10.0, duration / 10)
    args.out.mkdir(parents=True, exist_ok=True)
    frames = clip_jpegs()
    with tempfile.TemporaryDirectory(prefix="dinomask-soak-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("DINOMASK_CACHE", str(work / "cache"))
        model, reference = prepare(work, args.arch, args.runtime)
        camera = Camera(frames)
        live = LiveRun(camera, reference, work, args.runtime, args.interval) if "live" in which else None
        serve = ServeRun(model, args.runtime, args.clients, frames, tuple(args.serve_args.split())) if "serve" in which else None
        samples: list[dict] = []
        started = time.monotonic()
        print(f"soak: {duration:.0f} s, sampling every {args.interval:.0f} s, warm-up {warmup:.0f} s, model {args.arch}, "
              f"runtime {args.runtime}, {len(frames)} frames at 24 FPS", flush=True)
        try:
            while time.monotonic() - started < duration:
                time.sleep(args.interval)
                now = time.monotonic()
                sample: dict = {"t": round(now - started, 2), "live": None, "serve": None}
                if live is not None:
                    if live.process.poll() is not None:
                        raise SystemExit(f"soak: live exited early: {live.process.stderr.read()[-2000:]}")
                    sample["live"] = process_sample(live.process.pid)
                    line = live.latest(now - args.interval)
                    if line:
                        sample["live"] |= {"fps": line["fps"], "latency_ms_p50": line["latency_ms_p50"],
                                           "latency_ms_p95": line["latency_ms_p95"]}
                if serve is not None:
                    if serve.process.poll() is not None:
                        raise SystemExit(f"soak: serve exited early: {serve.process.stderr.read()[-2000:]}")
                    recent = [ms for at, ms in serve.latencies if at >= now - args.interval]
                    p50, p95 = percentiles(recent)
                    sample["serve"] = process_sample(serve.process.pid) | {
                        "frames": len(recent), "latency_ms_p50": p50, "latency_ms_p95": p95,
                        "queue_depth": serve.health().get("queue_depth")}
                    serve.latencies = [(at, ms) for at, ms in serve.latencies if at >= now - args.interval]
                samples.append(sample)
                parts = [f"t={sample['t']:7.1f}s"]
                for key in ("live", "serve"):
                    if sample[key]:
                        s = sample[key]
                        parts.append(f"{key}: RSS {s['rss_mb']:6.0f} MiB fds {s['fds']:3d} threads {s['threads']:3d} "
                                     f"p95 {s.get('latency_ms_p95') or float('nan'):6.1f} ms")
                print("  ".join(parts), flush=True)
        finally:
            live_code, live_err = live.close() if live is not None else (None, "")
            serve_code = serve.close() if serve is not None else None
            camera.close()
        verdicts = {key: judge(samples, key, warmup, duration) for key in ("live", "serve") if key in which}
        result = {"seconds": duration, "interval": args.interval, "warmup": warmup, "arch": args.arch,
                  "runtime": args.runtime, "clients": args.clients, "serve_args": args.serve_args,
                  "frames_in_clip": len(frames),
                  "live_exit": live_code, "serve_exit": serve_code,
                  "serve_client_errors": serve.errors[-20:] if serve is not None else [],
                  "taught_reference_saved": (work / "taught.npz").is_file() if live is not None else None,
                  "verdicts": verdicts, "samples": samples}
    result = json.loads(json.dumps(result, default=lambda o: o.item() if hasattr(o, "item") else str(o)))  # numpy scalars
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    plot(samples, args.out / "soak.png", warmup)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    ok = all(v["ok"] for v in verdicts.values())
    if live is not None and (live_code != 143 or not result["taught_reference_saved"]):
        print(f"soak: live ended with {live_code} (expected 143 after SIGTERM), taught reference saved: "
              f"{result['taught_reference_saved']}\n{live_err[-1500:]}")
        ok = False
    print(f"soak: {'PASSED' if ok else 'FAILED'}; curves in {args.out / 'soak.png'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
