"""How far each path is from this CPU's limit: the arithmetic of a 30 s window and the machine's measured peak.

FLOPs count the matrix products (2 per multiply-add), which are all but a rounding error of Whisper's work.
The peak is what a large square matrix product reaches here, per number format, on the benchmark's threads:
the ceiling a transcriber could approach, not a datasheet figure.
"""

import time

import torch

from . import results

SIZE = 2048  # large enough to be compute-bound on a laptop or server core, small enough to measure in seconds


def _operands(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "int8":
        return (torch.randint(-128, 128, (SIZE, SIZE), dtype=torch.int8) for _ in range(2))
    return (torch.randn(SIZE, SIZE, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[kind]) for _ in range(2))


def gemm_gflops(kind: str, threads: int, repeats: int = 5) -> float:
    """Best of `repeats` timed SIZE^3 products: fp32/bf16 through torch.mm, int8 through torch._int_mm (VNNI/AMX)."""
    torch.set_num_threads(threads)
    a, b = _operands(kind)
    product = torch._int_mm if kind == "int8" else torch.mm
    product(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * SIZE**3 / best / 1e9


def measure(run_id: str, threads: int, kinds=("fp32", "bf16", "int8")) -> list[dict]:
    """Peak rows for this run, kept in the `peak` table (a resumed run keeps the rows it has)."""
    done = results.read("peak")
    if len(done) and ((done.run_id == run_id) & (done.threads == threads)).any():
        return []
    env = results.environment(threads)
    rows = [{"run_id": run_id, "timestamp": results.now(), **env, "arithmetic": kind, "size": SIZE,
             "gflops": round(gemm_gflops(kind, threads), 1)} for kind in kinds]
    results.append("peak", rows)
    return rows


def encoder_flops(dims) -> float:
    d, n = dims.n_audio_state, dims.n_audio_ctx
    convs = 2 * 3 * dims.n_mels * d * 2 * n + 2 * 3 * d * d * n  # conv1 over 3000 frames, conv2 with stride 2
    per_layer = 2 * 12 * n * d * d + 2 * 2 * n * n * d  # q/k/v/out and the 4x MLP; scores and weighted sum
    return convs + dims.n_audio_layer * per_layer


def decoder_flops(dims, tokens: int, rows: int = 1, prompt: int = 3) -> float:
    """A window's decoder: the audio's keys/values once, then `tokens` + 1 steps of `rows` beams.

    Per step and row: the 14 d^2 multiply-adds of each layer's linears, self-attention over the context so
    far, cross-attention over the audio, and the vocabulary projection.
    """
    d, layers, audio = dims.n_text_state, dims.n_text_layer, dims.n_audio_ctx
    cross_kv = layers * 2 * 2 * audio * d * d
    steps = range(prompt, prompt + tokens + 1)
    per_row = sum(layers * (2 * 14 * d * d + 2 * 2 * (t + 1) * d + 2 * 2 * audio * d) + 2 * d * dims.n_vocab for t in steps)
    return cross_kv + rows * per_row
