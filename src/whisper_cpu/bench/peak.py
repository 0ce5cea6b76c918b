"""How far each path is from this CPU's limit: the arithmetic of a 30 s window and the machine's measured peak.

FLOPs count the matrix products (2 per multiply-add), which are all but a rounding error of Whisper's work.
The peak is what a large square matrix product reaches here, per number format, on the benchmark's threads,
through the fastest kernel PyTorch has for it (int8: oneDNN's `_int_mm` is fast only with VNNI/AMX, fbgemm's
dynamic Linear also on plain AVX2; float32: MKL's, which `torch.mm` calls, or oneDNN's, over 2x faster on AMD EPYC): the ceiling a transcriber could approach, not a datasheet figure.
"""

import time

import torch

from . import results

SIZE = 2048  # large enough to be compute-bound on a laptop or server core, small enough to measure in seconds


def _products(kernel: str):
    """A SIZE^3 product through one kernel: (the callable, its number format)."""
    import warnings

    from torch import nn

    if kernel == "torch._int_mm":  # int8 x int8 -> int32 (oneDNN; VNNI/AMX where the CPU has them)
        a, b = (torch.randint(-128, 128, (SIZE, SIZE), dtype=torch.int8) for _ in range(2))
        return (lambda: torch._int_mm(a, b)), "int8"
    if kernel == "fbgemm":  # the dynamic int8 Linear our int8 methods run, activations quantized inside
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated")
            linear = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(SIZE, SIZE, bias=False)), {nn.Linear}, dtype=torch.qint8)
        x = torch.randn(SIZE, SIZE)
        return (lambda: linear(x)), "int8"
    if kernel == "onednn-fp32":  # float32 through oneDNN: on AMD EPYC over 2x MKL's, which torch.mm calls (`encoder`)
        a, b = (torch.randn(SIZE, SIZE) for _ in range(2))
        return (lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")), "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[kernel]
    a, b = (torch.randn(SIZE, SIZE, dtype=dtype) for _ in range(2))
    return (lambda: torch.mm(a, b)), kernel


KERNELS = ("fp32", "onednn-fp32", "bf16", "torch._int_mm", "fbgemm")  # a number format's peak is its fastest kernel's


def gemm_gflops(kernel: str, threads: int, repeats: int = 5) -> tuple[float, str]:
    """(best GFLOP/s of `repeats` timed SIZE^3 products through `kernel`, its number format)."""
    torch.set_num_threads(threads)
    product, arithmetic = _products(kernel)
    product()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return 2 * SIZE**3 / best / 1e9, arithmetic


def measure(run_id: str, threads: int, kernels=KERNELS) -> list[dict]:
    """Peak rows for this run, one per kernel, kept in the `peak` table (a resumed run measures only what it lacks)."""
    done = results.read("peak")
    if len(done):
        mine = done[(done.run_id == run_id) & (done.threads == threads)]
        have = set(mine.kernel)
        kernels = [k for k in kernels if k not in have and not (k == "torch._int_mm" and "int8" in have)]
    env = results.environment(threads)
    rows = []
    for kernel in kernels:
        gflops, arithmetic = gemm_gflops(kernel, threads)
        rows.append({"run_id": run_id, "timestamp": results.now(), **env, "arithmetic": arithmetic, "kernel": kernel, "size": SIZE,
                     "gflops": round(gflops, 1)})
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


def _int8_paths(m: int, k: int, n: int) -> dict:
    """One (m x k) @ (k x n) product through each int8 path PyTorch has on the CPU, and fp32 as the yardstick.

    torch.ao's dynamic Linear (fbgemm) is deprecated; `torch._int_mm` (int8 x int8 -> int32, with per-row
    activation scales done around it) and `_weight_int8pack_mm` (int8 weights, float activations) are the
    paths meant to survive it. Whether they can replace it here is a question of their speed at these shapes.
    """
    import warnings

    from torch import nn

    x, linear = torch.randn(m, k), nn.Linear(k, n)
    weight = linear.weight.detach()
    scale = weight.abs().amax(1) / 127
    q = (weight / scale[:, None]).round().to(torch.int8)
    q_t = q.t().contiguous()

    def int_mm():
        s = x.abs().amax(1, keepdim=True) / 127
        return torch._int_mm((x / s).round().to(torch.int8), q_t) * (s * scale) + linear.bias

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")
        ao = {name: torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear: qconfig}, dtype=torch.qint8)
              for name, qconfig in (("fbgemm dynamic int8", torch.ao.quantization.default_dynamic_qconfig),
                                    ("fbgemm dynamic int8 per-channel", torch.ao.quantization.per_channel_dynamic_qconfig))}
    return {"fp32": lambda: linear(x), **{name: (lambda module=module: module(x)) for name, module in ao.items()},
            "torch._int_mm": int_mm, "_weight_int8pack_mm": lambda: torch.ops.aten._weight_int8pack_mm(x, q, scale) + linear.bias}


KERNEL_SHAPES = ((1, 512, 1536), (1, 512, 51865), (1500, 512, 2048))  # base: fused q/k/v and the vocabulary for one token; an encoder MLP


def kernels(run_id: str, threads: int, repeats: int = 20) -> list[dict]:
    """Median milliseconds of each int8 path at the shapes Whisper multiplies, in the `kernels` table."""
    done = results.read("kernels")
    if len(done) and ((done.run_id == run_id) & (done.threads == threads)).any():
        return []
    torch.set_num_threads(threads)
    env, rows = results.environment(threads), []
    with torch.inference_mode():
        for m, k, n in KERNEL_SHAPES:
            for path, product in _int8_paths(m, k, n).items():
                try:
                    product()
                except RuntimeError as error:
                    rows.append({"run_id": run_id, "timestamp": results.now(), **env, "m": m, "k": k, "n": n, "path": path,
                                 "ms": None, "error": str(error).splitlines()[0][:120]})
                    continue
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    product()
                    times.append(1000 * (time.perf_counter() - start))
                rows.append({"run_id": run_id, "timestamp": results.now(), **env, "m": m, "k": k, "n": n, "path": path,
                             "ms": round(sorted(times)[len(times) // 2], 4)})
    results.append("kernels", rows)
    return rows
