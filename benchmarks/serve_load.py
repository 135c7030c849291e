"""Bounded load test of ``dinomask serve`` on 127.0.0.1: N concurrent clients for T seconds.

Starts the server as a subprocess on a free loopback port (tiny random model by default,
or ``--model``), makes a reference from a davis-mini frame, then runs N client threads
that POST /v1/remove in a loop until the time is up. Prints p50/p95 latency, throughput,
the error count by status (503 = queue full, by design), and the server's memory (RSS)
after warm-up and at the end, flagging growth over 10 %. A benchmark: it asserts nothing.

    python benchmarks/serve_load.py [--clients 4] [--seconds 20] [--model DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis-mini"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--dataset", type=Path, default=DAVIS)
    args = parser.parse_args()
    import httpx
    import numpy as np

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    work = Path(tempfile.mkdtemp(prefix="dinomask-load-"))
    env.setdefault("DINOMASK_CACHE", str(work / "cache"))
    model = args.model
    if model is None:
        model = str(work / "tiny")
        subprocess.run([sys.executable, "-m", "dinomask.cli", "random-model", model], check=True, env=env, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", "import sys; from dinomask.cli import main; sys.exit(main())",
                               "serve", "--model", model, "--port", str(port), "--queue-size", str(args.queue_size)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                httpx.get(f"{url}/v1/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit(f"server did not start: {server.stderr.read().decode()[-500:]}") from None
                time.sleep(0.2)
        frame_path = args.dataset / "JPEGImages/480p/dog/00008.jpg"
        ref = httpx.post(f"{url}/v1/references", timeout=120, files={
            "image": ("r.jpg", (args.dataset / "JPEGImages/480p/dog/00000.jpg").read_bytes(), "image/jpeg"),
            "mask": ("m.png", (args.dataset / "Annotations/480p/dog/00000.png").read_bytes(), "image/png")}).json()["id"]
        frame = frame_path.read_bytes()
        for _ in range(3):  # warm-up
            httpx.post(f"{url}/v1/remove", params={"reference": ref}, files={"image": ("f.jpg", frame, "image/jpeg")}, timeout=120)
        rss_start = rss_mib(server.pid)
        latencies: list[float] = []
        statuses: collections.Counter = collections.Counter()
        lock = threading.Lock()
        stop_at = time.time() + args.seconds

        def client() -> None:
            with httpx.Client(timeout=120) as session:
                while time.time() < stop_at:
                    start = time.perf_counter()
                    try:
                        code = session.post(f"{url}/v1/remove", params={"reference": ref},
                                            files={"image": ("f.jpg", frame, "image/jpeg")}).status_code
                    except httpx.HTTPError as exc:
                        code = type(exc).__name__
                    elapsed = time.perf_counter() - start
                    with lock:
                        statuses[code] += 1
                        if code == 200:
                            latencies.append(elapsed)
                    if code == 503:
                        time.sleep(0.05)

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        rss_end = rss_mib(server.pid)
        ok = np.array(latencies) * 1e3
        errors = {k: v for k, v in statuses.items() if k != 200}
        print(f"# {args.clients} clients for {args.seconds:.0f} s against {url} (model {model}, queue {args.queue_size})")
        print(f"requests ok   : {len(ok)}  ({len(ok) / wall:.2f} /s)")
        if len(ok):
            print(f"latency ms    : p50 {np.percentile(ok, 50):.0f}  p95 {np.percentile(ok, 95):.0f}  max {ok.max():.0f}")
        print(f"errors        : {sum(errors.values())} {dict(errors) if errors else ''} (503 = queue full, by design)")
        growth = (rss_end - rss_start) / rss_start
        print(f"server RSS MiB: {rss_start:.0f} after warm-up -> {rss_end:.0f} at the end ({growth:+.1%})"
              + ("  <- GROWTH over 10%" if growth > 0.10 else "  (stable)"))
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
