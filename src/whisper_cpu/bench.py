"""Timing harness: the full transcribe a user runs, per model x method, medians over repeats, honest on shared CPUs.

Each timed repeat decodes the file, computes the mel, encodes and decodes, exactly as `model.transcribe` does
for a user. Beside it, the encoder and the decoder are timed alone on the first 30 s window, so the share of
the per-token decoder loop is visible. Other processes' CPU time during each repeat is read from /proc/stat;
repeats taken under contention are rerun, and what was seen is recorded in the row.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from . import audio, methods, peak, results

CONTENDED = 0.10  # share of the machine's CPU time used by others above which a repeat is rerun


def _busy_seconds() -> float:
    """CPU seconds all processes have spent busy (steal included: a hypervisor taking our cores is contention)."""
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Probe:
    """Wall time of a block and the CPU seconds that other processes used meanwhile."""

    wall_s: float = 0.0
    other_cpu_s: float = 0.0

    def __enter__(self):
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc):
        wall, busy, own = self._start
        self.wall_s = time.perf_counter() - wall
        self.other_cpu_s = max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own))

    def contended(self) -> bool:
        return self.other_cpu_s > CONTENDED * self.wall_s * (os.cpu_count() or 1) + 0.05


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...] = ("tiny.en", "base")
    methods: tuple[str, ...] = ("fp32", "fp32-nn", "qint8")
    repeats: int = 5
    beam_size: int | None = None
    threads: int = field(default_factory=results.default_threads)
    retries: int = 3
    output: Path = results.TIMINGS
    warmup: bool = True


def language_for(runner, clip_language: str) -> str:
    return clip_language if runner.multilingual else "en"


def plan(opts: Options) -> tuple[list[tuple[str, str]], list[str]]:
    """(model, method) pairs that can run here, and a note for each method that cannot."""
    names = [methods.get(name).name for name in opts.methods]
    if "fp32" in names and "fp32-gpu" not in names:
        names.append("fp32-gpu")  # the original's GPU column, wherever CUDA exists
    notes = [f"note: {name} skipped: {reason}" for name in names if (reason := methods.get(name).unavailable())]
    names = [name for name in names if not methods.get(name).unavailable()]
    return [(m, name) for m in opts.models for name in names], notes


def _done(output: Path, run_id: str) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for row in results.read_rows(output):
        if row["run_id"] == run_id:
            key = (row["model"], row["method"], row["audio_id"], int(row["threads"]), int(row["beam_size"]))
            counts[key] = counts.get(key, 0) + 1
    return counts


def run(opts: Options, clip: audio.Input, run_id: str | None = None, log=print) -> str:
    """Time every configuration of the plan on one input; `run_id` of an interrupted run resumes it."""
    run_id = run_id or results.new_run_id()
    torch.set_num_threads(opts.threads)
    env = results.environment(opts.threads)
    pairs, notes = plan(opts)
    for note in notes:
        log(note)
    if not clip.real:
        log(f"note: no real speech here; timing the synthesized clip {clip.id} instead")
    done = _done(opts.output, run_id)
    samples = audio.load(clip.path)
    bar = tqdm(total=len(pairs) * opts.repeats, desc=f"bench {run_id}", unit="run")
    for model_name, method_name in pairs:
        method = methods.get(method_name)
        finished = done.get((model_name, method_name, clip.id, opts.threads, opts.beam_size or 1), 0)
        bar.update(finished)
        if finished >= opts.repeats:
            continue
        bar.set_postfix_str(f"{model_name} {method_name}")
        start = time.perf_counter()
        runner = method.load(model_name, opts.threads)
        load_s = time.perf_counter() - start
        language = language_for(runner, clip.language)
        if opts.warmup:
            runner.transcribe(clip.path, language, opts.beam_size)
        for repeat in range(finished, opts.repeats):
            for attempt in range(1, opts.retries + 2):
                with Probe() as probe:
                    result = runner.transcribe(clip.path, language, opts.beam_size)
                if not probe.contended():
                    break
            encoder_s, decoder_s, window_tokens = runner.split_times(samples, language, opts.beam_size)
            row = {
                "run_id": run_id, "timestamp": results.now(), **env,
                "system": method.system, "model": model_name, "method": method_name,
                "device": method.device, "beam_size": opts.beam_size or 1, "audio_id": clip.id,
                "audio_s": round(clip.duration_s, 3), "repeat": repeat, "load_s": round(load_s, 4),
                "wall_s": round(probe.wall_s, 4), "encoder_s": round(encoder_s, 4), "decoder_s": round(decoder_s, 4),
                "window_tokens": window_tokens, "tokens": result["tokens"],
                "other_cpu_s": round(probe.other_cpu_s, 3), "contended": probe.contended(), "attempts": attempt,
                "transcript": result["text"],
            }
            results.append_rows(opts.output, [row])
            bar.update(1)
        del runner
    bar.close()
    return run_id


def _status_mb(field: str) -> float:
    line = next(l for l in open("/proc/self/status") if l.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def memory_probe(model_name: str, method_name: str, threads: int, path: Path, language: str) -> dict:
    """Meant for a fresh process: resident memory before and after loading, and the peak over one transcribe."""
    torch.set_num_threads(threads)
    start = _status_mb("VmRSS")
    runner = methods.get(method_name).load(model_name, threads)
    loaded = _status_mb("VmRSS")
    runner.transcribe(path, language_for(runner, language), None)
    return {
        "rss_start_mb": round(start, 1), "model_rss_mb": round(loaded - start, 1),
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "weights_disk_mb": round(sum(Path(p).stat().st_size for p in runner.weights) / 2**20, 1),
    }


def measure_memory(opts: Options, clip: audio.Input, run_id: str, output: Path) -> None:
    """Peak memory per configuration, each in its own process so one model's memory never hides another's."""
    pairs, _ = plan(opts)
    env = results.environment(opts.threads)
    done = {(r["model"], r["method"]) for r in results.read_rows(output) if r["run_id"] == run_id}
    for model_name, method_name in tqdm([p for p in pairs if p not in done], desc="memory", unit="config"):
        done = subprocess.run(
            [sys.executable, "-m", "whisper_cpu", "memory-probe", model_name, method_name, str(clip.path),
             "--threads", str(opts.threads), "--language", clip.language],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            tqdm.write(f"note: memory of {model_name} {method_name} not measured: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        row = {"run_id": run_id, "timestamp": results.now(), **env, "model": model_name, "method": method_name,
               "system": methods.get(method_name).system, "audio_id": clip.id, **json.loads(done.stdout.splitlines()[-1])}
        results.append_rows(output, [row])


SCALING = ("fp32", "qint8", "qint8-logits", "fast-qint8", "faster-whisper-fp32", "faster-whisper-int8", "whisper.cpp-q8_0")  # also at every thread count and long-form
BEAM = 5  # the beam width users of openai-whisper's CLI and of faster-whisper get by default
BEAM_ACCURACY = ("fp32", "fast-qint8", "faster-whisper-int8", "whisper.cpp-q8_0")  # WER at beam 5 too: ours, the baseline, each peer's usual pick


def run_all(opts: Options, run_id: str | None = None, log=print) -> str:
    """The full matrix in one run_id: peak GEMM, the 30 s window greedy and beam 5, thread scaling, long-form,
    memory and accuracy (greedy for every method, beam 5 for the headline ones)."""
    from . import accuracy

    run_id = run_id or results.new_run_id()
    peak.measure(run_id, opts.threads)  # first, while nothing of ours is loaded
    window = audio.window()
    beams = list(dict.fromkeys([opts.beam_size, BEAM]))
    for beam in beams:
        run(replace(opts, beam_size=beam), window, run_id, log)
    main = tuple(m for m in opts.methods if m in SCALING)
    for threads in range(1, opts.threads):
        run(Options(opts.models, main, repeats=3, threads=threads, beam_size=opts.beam_size, output=opts.output), window, run_id, log)
    longform = audio.longform()
    run(Options(opts.models, main, repeats=1, threads=opts.threads, beam_size=opts.beam_size, output=opts.output, warmup=False), longform, run_id, log)
    measure_memory(opts, window, run_id, results.MEMORY)
    for beam in beams:
        chosen = opts.methods if beam == opts.beam_size else tuple(m for m in opts.methods if m in BEAM_ACCURACY)
        accuracy.run(accuracy.Options(models=opts.models, methods=chosen, beam_size=beam, threads=opts.threads), run_id, log)
    return run_id
