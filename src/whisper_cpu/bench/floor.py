"""What 2x faster than faster-whisper's batched pipeline would have to fit in, on this machine.

A floor under our batched pipeline on the long recordings, from a batched run's rows and measurements made here:
the windows faster-whisper needed (fewer than ours) through our encoder, as timed in that run; every token our
pipeline decoded, as full steps of 8 windows of our int8 decoder (no partly filled batches, no logit rules, no
search, no window decoded twice); and Silero's pass over the recordings. Of the step, the cross-attention over
the audio is timed apart, in float32 (18 MB read per token for tiny, 37 MB for base) and in the narrower formats
that would read fewer bytes.
"""

import statistics
import time

import torch

from .. import models, pipeline, registry
from ..audio import load
from ..decoding import Cache
from . import harness, inputs, results, tables

FORMATS = (torch.float32, torch.float16, torch.bfloat16)
OURS, PEER = "fast-qint8-pc-batched", "faster-whisper-int8-batched"


def _median_ms(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def cross_attention_ms(dims, dtype: torch.dtype, windows: int = pipeline.BATCH, repeats: int = 20) -> float:
    """One decoder step's cross-attention in every layer for `windows` windows, one token each, as `decoding._attend`
    computes it: scores against the keys, softmax, weighted values (each layer its own keys and values, as in a model)."""
    heads, state, frames = dims.n_text_head, dims.n_text_state // dims.n_text_head, dims.n_audio_ctx
    query = torch.randn(windows, heads, 1, state, dtype=dtype)
    audio = [(torch.randn(windows, heads, state, frames, dtype=dtype), torch.randn(windows, heads, frames, state, dtype=dtype))
             for _ in range(dims.n_text_layer)]
    return _median_ms(lambda: [(query @ keys_t).softmax(-1) @ values for keys_t, values in audio], repeats)


def decoder_step_ms(name: str, threads: int, windows: int = pipeline.BATCH, offset: int = 64, repeats: int = 20) -> float:
    """One full step of our int8 decoder for `windows` windows, one token each, `offset` tokens into their text:
    every layer, the vocabulary, the cross-attention above; no logit rules, no search."""
    model = registry.get(OURS).load(name, threads).model
    decoder, dims = model.decoder, model.dims
    cache = Cache(decoder, torch.randn(windows, dims.n_audio_ctx, dims.n_audio_state), windows)
    cache.kv.normal_()  # the earlier tokens' keys and values (the cache is allocated, not written)
    tokens = torch.zeros(windows, 1, dtype=torch.long)

    def step():
        cache.offset = offset
        decoder.step(tokens, cache, [-1])

    with torch.inference_mode():
        return _median_ms(step, repeats)


def vad_s(recordings: list[inputs.Input], repeats: int = 3) -> float:
    """Seconds of Silero's pass over all the recordings (reading them not counted)."""
    samples = [load(r.path) for r in recordings]
    return _median_ms(lambda: [pipeline.speech_regions(s) for s in samples], repeats) / 1000


def _batched_rows(timings, gate, run_id: str, model: str) -> dict | None:
    medians = tables.long_timings(timings, run_id)
    medians = medians[(medians.model == model) & (medians.batch_size == pipeline.BATCH) & (medians.threads == medians.threads.max())]
    ours, peer = (medians[medians.method == m] for m in (OURS, PEER))
    windows = gate[(gate.run_id == run_id) & (gate.model == model) & (gate.method == PEER) & (gate.audio_id != "all")].windows
    if not len(ours) or len(peer) != len(ours) or not len(windows):
        return None
    rows = timings[(timings.run_id == run_id) & (timings.model == model) & (timings.method == OURS)]
    tokens = rows.groupby("audio_id").tokens.median().sum()
    return {"fw_s": float(peer.wall_s.sum()), "fw_windows": int(windows.sum()), "encoder_s_per_window": float(ours.encoder_s.median()),
            "tokens": int(tokens), "threads": int(ours.threads.iloc[0])}


def measure(run_id: str | None = None) -> list[dict]:
    """A `floor` row per model of the batched run (default: the reference machine's newest), measured on this machine
    with that run's threads; the run's own rows say what the two pipelines did."""
    timings, gate = tables.load_timings(), tables.load_longform()
    run_id, measured = run_id or next(iter(tables.batched_runs(timings)), None), results.new_run_id()
    recordings = [r for r in inputs.longform() if r.id in set(timings[timings.run_id == run_id].audio_id)]
    found = []
    for model in dict.fromkeys(timings[timings.run_id == run_id].model):
        if (seen := _batched_rows(timings, gate, run_id, model)) is None:
            continue
        torch.set_num_threads(seen["threads"])
        dims = models.dims(model)
        with harness.Probe() as probe:  # other processes' CPU time meanwhile, as the timings record it
            cross = {str(dtype).split(".")[-1]: round(cross_attention_ms(dims, dtype), 3) for dtype in FORMATS}
            step_ms = decoder_step_ms(model, seen["threads"])
            vad = vad_s(recordings)
        encoder = seen["fw_windows"] * seen["encoder_s_per_window"]
        steps = seen["tokens"] * step_ms / pipeline.BATCH / 1000
        found.append({"run_id": measured, "timestamp": results.now(), **results.environment(seen["threads"]),
                      "batched_run": run_id, "model": model, **seen, "encoder_s": round(encoder, 2), "decoder_step_ms": round(step_ms, 3),
                      "decoder_s": round(steps, 2), "cross_attention_s": round(seen["tokens"] * cross["float32"] / pipeline.BATCH / 1000, 2),
                      "vad_s": round(vad, 2), "floor_s": round(encoder + steps + vad, 2), "half_fw_s": round(seen["fw_s"] / 2, 2),
                      **{f"cross_attention_ms_{name}": ms for name, ms in cross.items()},
                      "other_cpu_s": round(probe.other_cpu_s, 3), "contended": probe.contended()})
    if found:
        results.append_csv("floor", found)
    return found
