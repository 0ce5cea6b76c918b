"""The encoder's self-attention on the faster float32 matrix product of this CPU, MKL's or oneDNN's, timed here.

Over 1500 frames the attention is a third of a window's encoder arithmetic (4 n^2 d a layer against 24 n d^2 for its
products), and once the products are int8 or bfloat16 it is most of the encoder's time. PyTorch's CPU kernel for it
(`scaled_dot_product_attention`) multiplies through the BLAS it is built with, MKL in the pinned wheel, which on
AMD EPYC runs a float32 product at well under half the speed oneDNN does on the same cores (on a Zen 5: 157
against 376 GFLOP/s at 2048^3, 2 threads). So where oneDNN is measurably faster the scores and the weighted sum go
through it, a block of queries at a time so that the scores stay in cache: the same float32 numbers, summed in another
order (on a Zen 5, 2 threads, a layer's attention takes 1.3-1.6x less time, a window's encoder 1.15-1.3x less with int8
or bfloat16 products). On a Zen 4 oneDNN's product is only 1.1-1.5x faster and PyTorch's fused kernel wins.
"""

import time
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from whisper.model import MultiHeadAttention, Whisper

ROWS = 500  # queries per block: 500 x 1500 float32 scores are 3 MB, in cache while the softmax and the second product read them
MARGIN = 1.5  # MKL's product must be this much slower than oneDNN's for openai-whisper's kernel to be replaced


def _onednn(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """q, k, v: (batch, frames, head, state per head) views; returns (batch, frames, head * state per head)."""
    linear = torch.ops.mkldnn._linear_pointwise
    out = q.new_empty(q.shape)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            keys, values_t = k[b, :, h].contiguous(), v[b, :, h].t().contiguous()
            for start in range(0, q.shape[1], ROWS):
                scores = linear(q[b, start : start + ROWS, h] * scale, keys, None, "none", [], "")
                out[b, start : start + ROWS, h] = linear(scores.softmax(dim=-1), values_t, None, "none", [], "")
    return out.flatten(start_dim=2)


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    a = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
    return a.transpose(1, 2).flatten(start_dim=2)


def _faster(ours, theirs, repeats: int = 5) -> float:
    """Median of theirs over ours, timed in turns (a busy moment slows both alike), after two calls of each."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats + 2):
        for run, spent in zip((ours, theirs), times):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return float(np.median(times[1][2:]) / np.median(times[0][2:]))


@lru_cache
def kernel(threads: int) -> str:
    """"onednn" where, at this many threads, MKL's float32 product (which PyTorch's attention kernel multiplies through)
    takes `MARGIN` times oneDNN's on the scores of a block of queries, and our attention on two heads then also takes
    less time than PyTorch's; else "sdpa". Timed once per process and thread count (0.2 s). Both, because each alone
    misleads in one process out of a few, and a choice that flipped between processes would flip the words of int8
    methods: the product's gap is the cause and wide where it pays (2x on a Zen 5), but on a Zen 4 it reaches 1.46x
    in some processes while our attention there takes 1.1-1.7x PyTorch's (its fused kernel saves more than the
    product gives); the attention's own gap on a Zen 5 (1.3-1.6x) fell below a 15% margin in some processes."""
    if not torch.backends.mkldnn.is_available():
        return "sdpa"
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        queries, keys = torch.randn(ROWS, 64), torch.randn(1500, 64)
        q, k, v = (torch.randn(1, 1500, 2, 64) for _ in range(3))
        with torch.inference_mode():
            product = _faster(lambda: torch.ops.mkldnn._linear_pointwise(queries, keys, None, "none", [], ""), lambda: queries @ keys.t())
            faster = product > MARGIN and _faster(lambda: _onednn(q, k, v, 0.125), lambda: _sdpa(q, k, v)) > 1
    finally:
        torch.set_num_threads(before)
    return "onednn" if faster else "sdpa"


class EncoderAttention(MultiHeadAttention):
    """openai-whisper's attention with its `qkv_attention` on `kernel`'s choice; the encoder has no mask."""

    def qkv_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> tuple[Tensor, None]:
        if mask is not None or q.device.type != "cpu" or q.dtype != torch.float32 or kernel(torch.get_num_threads()) != "onednn":
            return super().qkv_attention(q, k, v, mask)
        q, k, v = (t.view(*t.shape[:2], self.n_head, -1) for t in (q, k, v))
        return _onednn(q, k, v, q.shape[-1] ** -0.5), None


def fast(model: Whisper) -> Whisper:
    """The encoder's attention modules made `EncoderAttention`s, in place: the same Linears, another kernel."""
    for block in model.encoder.blocks:
        block.attn.__class__ = EncoderAttention
    return model
