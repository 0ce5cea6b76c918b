"""Load test of `whisper-cpu serve`: N clients posting a real clip for M seconds on 127.0.0.1, the server in its own
process as users run it; throughput, latency percentiles, and every request accounted for (answered, failed, lost)."""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from .. import UserError, machine, workspace
from ..audio import load as load_audio
from . import results

SERVER_START_S = 600  # a model's first load may convert or quantize it


@dataclass(frozen=True)
class Options:
    model: str = "tiny.en"
    method: str = "auto"
    clients: int = 4
    seconds: float = 30.0
    threads: int = 0  # the server's (0: its default)
    clip: Path | None = None  # default: the benchmark window


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(opts: Options, port: int, stderr) -> subprocess.Popen:
    """The server in a process of its own, once it answers; its messages go to the file `stderr`."""
    command = [sys.executable, "-m", "whisper_cpu", "--workspace", str(workspace.get().home), "serve", "--model", opts.model,
               "--method", opts.method, "--port", str(port), *(["--threads", str(opts.threads)] if opts.threads else [])]
    # a private server on loopback for the clients below: without the user's API key, which they do not send
    env = {k: v for k, v in os.environ.items() if k != "WHISPER_CPU_API_KEY"}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True, env=env)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the server exited before answering: {(Path(stderr.name).read_text().strip().splitlines() or ['?'])[-1]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise UserError(f"the server did not answer within {SERVER_START_S} s")


def _client(url: str, model: str, name: str, data: bytes, end: float, log: list) -> None:
    with httpx.Client(timeout=600) as http:
        while time.monotonic() < end:
            start = time.monotonic()
            try:
                response = http.post(url, files={"file": (name, data)}, data={"model": model})
                log.append((time.monotonic() - start, response.status_code, response.status_code == 200 and bool(response.json().get("text"))))
            except httpx.HTTPError:
                log.append((time.monotonic() - start, None, False))


def run(opts: Options, clip: Path, run_id: str | None = None) -> dict:
    """One load test; its row goes to results/serve.csv."""
    run_id = run_id or results.new_run_id()
    port = _free_port()
    data = Path(clip).read_bytes()
    audio_s = len(load_audio(clip)) / 16000
    messages = tempfile.NamedTemporaryFile("w+", suffix=".log")
    server = start_server(opts, port, messages)
    method = next((line.split("(")[1].split(")")[0] for line in Path(messages.name).read_text().splitlines() if line.startswith("serving ")),
                  opts.method)
    log: list[tuple] = []
    try:
        end = time.monotonic() + opts.seconds
        started = time.monotonic()
        clients = [threading.Thread(target=_client, args=(f"http://127.0.0.1:{port}/v1/audio/transcriptions", opts.model, Path(clip).name,
                                                          data, end, log)) for _ in range(opts.clients)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        wall = time.monotonic() - started
    finally:
        server.terminate()  # graceful: uvicorn answers what it accepted, then exits
        try:
            exit_code = server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            exit_code = None
    latencies = np.array([t for t, status, _ in log if status == 200]) * 1000
    ok = sum(1 for _, status, text in log if status == 200 and text)
    row = {
        "run_id": run_id, "timestamp": results.now(), **results.environment(opts.threads or machine.default_threads()), "model": opts.model,
        "method": method,
        "clip": Path(clip).name, "clip_s": round(audio_s, 2), "clients": opts.clients, "seconds": opts.seconds, "wall_s": round(wall, 2),
        "requests": len(log), "ok": ok, "failed": sum(1 for _, status, _ in log if status not in (None, 200)),
        "lost": sum(1 for _, status, _ in log if status is None), "empty": sum(1 for _, status, text in log if status == 200 and not text),
        "requests_per_s": round(ok / wall, 3), "audio_x_realtime": round(ok * audio_s / wall, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(latencies) else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 1) if len(latencies) else None,
        "max_ms": round(float(latencies.max()), 1) if len(latencies) else None, "server_exit": exit_code,
    }
    messages.close()
    results.append_csv("serve", [row])
    return row
