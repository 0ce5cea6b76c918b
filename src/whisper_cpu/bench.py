"""Timing harness: the full transcribe a user runs, per model x method, medians over repeats, honest on shared CPUs.

Each timed repeat decodes the file, computes the mel, encodes and decodes, exactly as `model.transcribe` does
for a user. Beside it, the encoder and the decoder are timed alone on the first 30 s window, so the share of
the per-token decoder loop is visible. Other processes' CPU time during each repeat is read from /proc/stat;
repeats taken under contention are rerun, and what was seen is recorded in the row.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import whisper
from tqdm import tqdm

from . import audio, methods, models, results

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


def language_for(model, clip_language: str) -> str:
    return clip_language if model.is_multilingual else "en"


def transcribe(model, path: Path, language: str, beam_size: int | None) -> dict:
    """What a user runs: decode the file, then openai-whisper's transcribe, greedy or beam, no fallback."""
    samples = audio.load(path)
    return model.transcribe(
        samples, language=language, temperature=0.0, beam_size=beam_size,
        condition_on_previous_text=False, fp16=False, verbose=None,
    )


def split_times(model, samples, language: str, beam_size: int | None) -> tuple[float, float, int]:
    """Encoder and decoder timed alone on the first 30 s window: (encoder_s, decoder_s, tokens)."""
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), model.dims.n_mels)[None].to(model.device)
    options = whisper.DecodingOptions(language=language, temperature=0.0, beam_size=beam_size, fp16=False)
    with torch.inference_mode():
        start = time.perf_counter()
        features = model.embed_audio(mel)
        _sync(model)
        encoder_s = time.perf_counter() - start
        start = time.perf_counter()
        decoded = whisper.decode(model, features, options)
        _sync(model)
    return encoder_s, time.perf_counter() - start, len(decoded[0].tokens)


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def plan(opts: Options) -> list[tuple[str, str, str]]:
    """(model, method, device) triples; the original's GPU fp32 column only where CUDA exists."""
    for name in opts.methods:
        methods.get(name)
    triples = [(m, name, "cpu") for m in opts.models for name in opts.methods]
    if torch.cuda.is_available():
        triples += [(m, "fp32", "cuda") for m in opts.models]
    return triples


def _done(output: Path, run_id: str) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for row in results.read_rows(output):
        if row["run_id"] == run_id:
            key = (row["model"], row["method"], row["device"], row["audio_id"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def run(opts: Options, clip: audio.Input, run_id: str | None = None, log=print) -> str:
    """Time every configuration of the plan on one input; `run_id` of an interrupted run resumes it."""
    run_id = run_id or results.new_run_id()
    torch.set_num_threads(opts.threads)
    env = results.environment(opts.threads)
    triples = plan(opts)
    if not torch.cuda.is_available():
        log("note: CUDA is not available, so the original's GPU fp32 column is skipped")
    if not clip.real:
        log(f"note: no real speech here; timing the synthesized clip {clip.id} instead")
    done = _done(opts.output, run_id)
    samples = audio.load(clip.path)
    bar = tqdm(total=len(triples) * opts.repeats, desc=f"bench {run_id}", unit="run")
    for model_name, method_name, device in triples:
        finished = done.get((model_name, method_name, device, clip.id), 0)
        bar.update(finished)
        if finished >= opts.repeats:
            continue
        bar.set_postfix_str(f"{model_name} {method_name} {device}")
        start = time.perf_counter()
        model = methods.get(method_name).prepare(models.load_model(model_name)).to(device)
        load_s = time.perf_counter() - start
        language = language_for(model, clip.language)
        transcribe(model, clip.path, language, opts.beam_size)  # warm-up
        for repeat in range(finished, opts.repeats):
            for attempt in range(1, opts.retries + 2):
                with Probe() as probe:
                    result = transcribe(model, clip.path, language, opts.beam_size)
                if not probe.contended():
                    break
            encoder_s, decoder_s, window_tokens = split_times(model, samples, language, opts.beam_size)
            row = {
                "run_id": run_id, "timestamp": results.now(), **env,
                "system": methods.get(method_name).system, "model": model_name, "method": method_name,
                "device": device, "beam_size": opts.beam_size or 1, "audio_id": clip.id,
                "audio_s": round(clip.duration_s, 3), "repeat": repeat, "load_s": round(load_s, 4),
                "wall_s": round(probe.wall_s, 4), "encoder_s": round(encoder_s, 4), "decoder_s": round(decoder_s, 4),
                "window_tokens": window_tokens, "tokens": sum(len(s["tokens"]) for s in result["segments"]),
                "other_cpu_s": round(probe.other_cpu_s, 3), "contended": probe.contended(), "attempts": attempt,
                "transcript": result["text"].strip(),
            }
            results.append_rows(opts.output, [row])
            bar.update(1)
        del model
    bar.close()
    return run_id
