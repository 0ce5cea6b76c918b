"""Where one decoder token's time goes, method by method, beside the peers' ms per token in the same run.

The window is decoded greedily from its encoded audio by each runner's `split_times`, as `bench` times it: the
decoder's time over its tokens is the ms per token (median of repeats, no profiler attached). One more decode under torch's profiler splits our
methods' token into the self time of its operators, by kind: the matrix products of each token, the products that
make the window's audio keys and values (once per window, shared by its tokens), the attention (scores, softmax,
weighted values), the norms, the vocabulary-wide work of the logit rules and the search, and every other tensor
operator. What the operators do not account for is Python and PyTorch's dispatch between them. The profiler's own
cost per operator lands in that last part too, so it is an upper bound there. (whisper.cpp's split is its own
timings: decode, batched decode and prompt over its decode runs.)
"""

import torch
import whisper

from .. import audio, registry
from ..runner import DecodeOptions
from . import harness, inputs, results

KINDS = ("products", "audio_keys", "attention", "norms", "logits", "other_ops")
ATTENTION = {"aten::bmm", "aten::_softmax", "aten::baddbmm"}
LOGITS = {"aten::_log_softmax", "aten::max", "aten::argmax", "aten::masked_fill_", "aten::index_fill_", "aten::logsumexp", "aten::amax",
          "aten::exp", "aten::exp_", "aten::gather", "aten::topk", "aten::sort", "aten::where", "aten::fill_"}


def kind(name: str, shapes: list) -> str:
    """The kind of one profiled operator, from its name and (for products) how many rows its input has."""
    if "linear" in name or name in ("aten::addmm", "aten::mm"):
        rows = shapes[0][-2] if shapes and len(shapes[0]) >= 2 else 1
        return "audio_keys" if rows > 64 else "products"  # a token's rows are the batch's; the window's audio has 1500
    if name in ATTENTION or "scaled_dot_product" in name:  # openai-whisper's own attention: one fused operator
        return "attention"
    if name == "aten::native_layer_norm":
        return "norms"
    return "logits" if name in LOGITS else "other_ops"


def per_token(runner, samples, options: DecodeOptions, repeats: int) -> dict:
    """ms per token from the runner's own split of the window (bench's definition, every system alike): the median
    repeat's time over its own tokens, where a repeat's tokens may differ from another's."""
    runner.split_times(samples, options)
    splits = sorted((runner.split_times(samples, options) for _ in range(repeats)), key=lambda s: s[1] / s[2])
    _, decoder_s, tokens = splits[len(splits) // 2]
    return {"tokens": tokens, "ms_per_token": round(1000 * decoder_s / tokens, 3)}


def parts(model, samples, options: DecodeOptions, tokens: int, ms: float) -> dict:
    """Our decoder's token split by kind of operator: one more decode of the window, as `split_times` decodes it, profiled."""
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), model.dims.n_mels)[None]
    decode = whisper.DecodingOptions(language=options.language, task=options.task, temperature=0.0, fp16=False)
    with torch.inference_mode():
        features = model.embed_audio(mel)
        with torch.profiler.profile(record_shapes=True) as profiled:
            model.decode(features, decode)
    spent = dict.fromkeys(KINDS, 0.0)
    for event in profiled.key_averages(group_by_input_shape=True):
        spent[kind(event.key, event.input_shapes)] += event.self_cpu_time_total / 1000  # ms
    found = {f"{k}_ms": round(v / tokens, 3) for k, v in spent.items()}
    return {**found, "python_ms": round(max(0.0, ms - sum(found.values())), 3)}


def measure(model_names: tuple[str, ...], method_names: tuple[str, ...], threads: int, repeats: int = 5, log=print) -> list[dict]:
    """One row per model x method: its ms per token on the window, and for ours where that time goes."""
    torch.set_num_threads(threads)
    window, run_id, rows = inputs.window(), results.new_run_id(), []
    samples, options = audio.load(window.path), DecodeOptions(language="en")
    for model in model_names:
        for name in method_names:
            entry = registry.get(name)
            if why := entry.unavailable():
                log(f"{name}: skipped, {why}")
                continue
            runner = entry.load(model, threads)
            with harness.Probe() as probe:
                found = per_token(runner, samples, options, repeats)
                if entry.ours:
                    found |= parts(runner.model, samples, options, found["tokens"], found["ms_per_token"])
            rows.append({"run_id": run_id, "timestamp": results.now(), **results.environment(threads), "model": model, "method": name,
                         "system": entry.system.name, "arithmetic": entry.arithmetic, "audio_id": window.id, **found,
                         "other_cpu_s": round(probe.other_cpu_s, 3), "contended": probe.contended()})
            log(f"{model} {name}: {found['ms_per_token']} ms per token")
    if rows:
        results.append_csv("steps", rows)
    return rows
