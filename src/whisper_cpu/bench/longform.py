"""The long-form accuracy gate: whole recordings transcribed the way users do, scored against fp32 with a CI.

Short clips never exercise what breaks on long files: openai-whisper's temperature fallback (a window whose
average log-probability or compression ratio crosses a threshold is re-decoded by sampling) and conditioning
on the previous window's text. Here every method transcribes the long recordings of `inputs.longform` end to
end through `Runner.transcribe`, exactly as `whisper-cpu transcribe` does. The hypothesis is aligned to the
joined reference once; each error is attributed to the clip its reference words belong to (an insertion to
the clip of the word before it), so the WER change against fp32 gets a paired bootstrap over clips, pooled
across the recordings (one changed window shifts all later ones, so a single file is a noisy judge).
"""

import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import jiwer
import numpy as np
import torch
from tqdm import tqdm

from .. import machine, models, registry, workspace
from ..runner import DecodeOptions
from . import inputs, isolate, results
from .accuracy import append_scores, bootstrap_delta, normalize, seed

NGRAM = 5  # a word 5-gram repeated more often than the reference has it: the mark of a hallucination loop
POOLED = "all"  # the audio_id of the row pooled over every recording: the one the gate reads


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...] = ("tiny.en", "base")
    methods: tuple[str, ...] = ("fp32",)
    decoding: DecodeOptions = DecodeOptions()
    threads: int = 0
    manifest: Path | None = None
    timeout: float = isolate.TIMEOUT  # seconds one model x method may take (in its own process) before it counts as hung


def per_clip_errors(parts: tuple[tuple[str, str], ...], hypothesis: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(errors per clip, reference words per clip, substitutions/deletions/insertions in total)."""
    owner, words = [], []
    for index, (_, reference) in enumerate(parts):
        clip_words = normalize(reference, "en").split()
        words += clip_words
        owner += [index] * len(clip_words)
    hyp = normalize(hypothesis, "en")
    errors, counts = np.zeros(len(parts)), Counter()
    if not hyp:
        np.add.at(errors, owner, 1)
        return errors, np.bincount(owner, minlength=len(parts)).astype(float), {"deletions": len(words), "insertions": 0, "substitutions": 0}
    for chunk in jiwer.process_words(" ".join(words), hyp).alignments[0]:
        if chunk.type == "equal":
            continue
        if chunk.type == "insert":
            errors[owner[max(0, chunk.ref_start_idx - 1)]] += chunk.hyp_end_idx - chunk.hyp_start_idx
            counts["insertions"] += chunk.hyp_end_idx - chunk.hyp_start_idx
            continue
        for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
            errors[owner[i]] += 1
        counts["deletions" if chunk.type == "delete" else "substitutions"] += chunk.ref_end_idx - chunk.ref_start_idx
    return errors, np.bincount(owner, minlength=len(parts)).astype(float), {k: counts[k] for k in ("deletions", "insertions", "substitutions")}


def repeated_ngrams(reference: str, hypothesis: str, n: int = NGRAM) -> int:
    """Word n-grams the hypothesis repeats beyond the reference's own count of them."""
    def grams(text):
        w = normalize(text, "en").split()
        return Counter(tuple(w[i : i + n]) for i in range(len(w) - n + 1))

    ref = grams(reference)
    return sum(max(0, c - ref[g]) for g, c in grams(hypothesis).items() if c > 1)


def transcripts_path(run_id: str):
    return workspace.get().results / "transcripts" / f"{run_id}-longform.jsonl"


def transcribe_all(opts: Options, recordings: list[inputs.Input], run_id: str, threads: int, log) -> dict[tuple, str]:
    """One record per model x method x recording, each model x method in a child process of its own; a resumed run skips
    what its transcripts already hold. Returns why each model x method that did not finish failed."""
    path = transcripts_path(run_id)
    done = {(r["model"], r["method"], r["audio_id"]) for r in results.read_jsonl(path)}
    todo = [(m, k) for m in opts.models for k in dict.fromkeys(("fp32", *opts.methods))
            if any((m, k, r.id) not in done for r in recordings)]
    bar = tqdm(total=len(todo) * len(recordings), desc=f"longform {run_id}", unit="recording")
    failed = {}
    for model_name, method_name in todo:
        if why := registry.get(method_name).unavailable():
            log(f"note: {method_name} skipped: {why}")
            bar.update(len(recordings))
            continue
        bar.set_postfix_str(f"{model_name} {method_name}")
        pending = [r for r in recordings if (model_name, method_name, r.id) not in done]
        bar.update(len(recordings) - len(pending))
        spec = {"opts": opts, "model": model_name, "method": method_name, "recordings": pending, "threads": threads,
                "run_id": run_id, "transcripts": path}
        if why := isolate.call("whisper_cpu.bench.longform:transcribe_config", spec, opts.timeout, bar.update):
            bar.write(f"note: {model_name} {method_name} failed: {why}")
            failed[(model_name, method_name)] = why
    bar.close()
    return failed


def transcribe_config(spec: dict) -> None:
    """In a child: one model x method over its pending recordings, each record appended as soon as it is decoded."""
    torch.set_num_threads(spec["threads"])
    entry = registry.get(spec["method"])
    runner = entry.load(spec["model"], spec["threads"])
    decoding = replace(spec["opts"].decoding, language="en")
    for recording in spec["recordings"]:
        seed(recording.id)
        start = time.perf_counter()
        transcript = runner.transcribe(recording.path, decoding)
        results.append_jsonl(spec["transcripts"], [{
            "run_id": spec["run_id"], "model": spec["model"], "method": spec["method"], "system": entry.system.name,
            "audio_id": recording.id, "audio_s": round(recording.duration_s, 3), "decoding": decoding.tag,
            "wall_s": round(time.perf_counter() - start, 3), "windows": transcript.windows,
            "fallbacks": transcript.fallbacks, "hypothesis": transcript.text,
        }])
        isolate.report(1)


def score(records: list[dict], recordings: list[inputs.Input]) -> list[dict]:
    """A row per model x method x recording, and one pooled over the recordings, with the CI against fp32."""
    parts = {r.id: r.parts for r in recordings}
    clips: dict[tuple, dict] = {}  # (model, method) -> recording -> (errors, words, counts, record)
    for r in records:
        errors, words, counts = per_clip_errors(parts[r["audio_id"]], r["hypothesis"])
        clips.setdefault((r["model"], r["method"]), {})[r["audio_id"]] = (errors, words, counts, r)
    rows = []
    for (model, method), by_recording in clips.items():
        base = clips.get((model, "fp32"), {})
        for audio_id in [*by_recording, POOLED]:
            ids = list(by_recording) if audio_id == POOLED else [audio_id]
            if audio_id == POOLED and (len(ids) < 2 or set(ids) != set(parts)):
                continue
            errors, words = (np.concatenate([by_recording[i][k] for i in ids]) for k in (0, 1))
            records_ = [by_recording[i][3] for i in ids]
            row = {
                "model": model, "method": method, "system": records_[0]["system"], "audio_id": audio_id,
                "audio_s": round(sum(r["audio_s"] for r in records_), 3), "wall_s": round(sum(r["wall_s"] for r in records_), 3),
                "wer": round(errors.sum() / words.sum(), 5),
                **{k: sum(by_recording[i][2][k] for i in ids) for k in ("deletions", "insertions", "substitutions")},
                "fallbacks": None if any(r["fallbacks"] is None for r in records_) else sum(r["fallbacks"] for r in records_),
                "windows": None if any(r["windows"] is None for r in records_) else sum(r["windows"] for r in records_),
                # per recording, then summed: the same clips recur across recordings, their n-grams with them
                "repeated_ngrams": sum(repeated_ngrams(" ".join(ref for _, ref in parts[r["audio_id"]]), r["hypothesis"]) for r in records_),
            }
            if method != "fp32" and all(i in base for i in ids):
                base_errors = np.concatenate([base[i][0] for i in ids])
                delta, low, high = bootstrap_delta(base_errors, errors, words)
                row |= {"wer_delta": round(delta, 5), "ci_low": round(low, 5), "ci_high": round(high, 5)}
            rows.append(row)
    return rows


def run(opts: Options, run_id: str | None = None, log=print) -> str:
    """Transcribe the long recordings with every model x method (fp32 always, as the baseline) and score them."""
    models.refuse_random(opts.models)
    run_id = run_id or results.new_run_id()
    threads = opts.threads or machine.default_threads()
    torch.set_num_threads(threads)
    recordings = inputs.longform(opts.manifest)
    failed = transcribe_all(opts, recordings, run_id, threads, log)
    append_scores("longform", run_id, opts.models, opts.methods, opts.decoding, threads, failed,
                  lambda records: score(records, recordings), results.read_jsonl(transcripts_path(run_id)), inputs.material(opts.manifest))
    return run_id
