"""The encoder's attention on oneDNN: PyTorch's numbers, a kernel chosen by timing, openai-whisper's where it must."""

import pytest
import torch
import torch.nn.functional as F
from whisper.model import MultiHeadAttention

from whisper_cpu import decoding, encoder, models

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def attention(n_state: int = 256, n_head: int = 4) -> MultiHeadAttention:
    torch.manual_seed(0)
    module = MultiHeadAttention(n_state, n_head)
    module.__class__ = encoder.EncoderAttention
    return module.requires_grad_(False)


@pytest.mark.parametrize("frames", [1500, 700, 37])  # three blocks; a block and a part; less than one
def test_onednn_attention_gives_pytorchs_numbers(frames):
    q, k, v = (torch.randn(2, frames, 4, 64) * 2 for _ in range(3))
    ours = encoder._onednn(q, k, v, 64 ** -0.5)
    assert ours.shape == (2, frames, 256)
    torch.testing.assert_close(ours, encoder._sdpa(q, k, v), rtol=1e-5, atol=1e-5)


def test_the_kernel_is_onednn_where_its_product_and_its_attention_are_both_timed_faster(monkeypatch):
    encoder.kernel.cache_clear()
    try:
        # (the product's ratio, the attention's ratio) -> choice: a Zen 5, a Zen 4's product with its attention, an Intel
        for ratios, chosen in (((2.0, 1.4), "onednn"), ((1.6, 0.8), "sdpa"), ((2.0, 0.99), "sdpa"), ((1.3, 1.4), "sdpa"), ((0.7, 0.5), "sdpa")):
            timed = iter(ratios)
            monkeypatch.setattr(encoder, "_faster", lambda ours, theirs: next(timed))
            encoder.kernel.cache_clear()
            assert encoder.kernel(1) == chosen, ratios
    finally:
        encoder.kernel.cache_clear()


def test_each_kernel_runs_where_chosen_and_openai_whispers_elsewhere(monkeypatch):
    module, x = attention(), torch.randn(1, 300, 256)
    calls = []
    monkeypatch.setattr(encoder, "_onednn", lambda *a: calls.append("onednn") or encoder._sdpa(*a[:3]))
    for chosen in ("onednn", "sdpa"):
        monkeypatch.setattr(encoder, "kernel", lambda threads, chosen=chosen: chosen)
        calls.clear()
        out, qk = module(x)
        assert calls == (["onednn"] if chosen == "onednn" else []) and qk is None and out.shape == x.shape
    calls.clear()
    monkeypatch.setattr(encoder, "kernel", lambda threads: "onednn")
    module.to(torch.bfloat16)(x.bfloat16())  # bfloat16 scores would lose digits that PyTorch's kernel keeps
    module.float()(x, mask=torch.zeros(300, 300))  # a mask: the decoder's, never the encoder's
    assert calls == []


def test_fast_models_attend_in_the_encoder_with_it_and_give_its_output(monkeypatch):
    model = models.load_model("tiny.en")
    mel = torch.randn(1, 80, 3000)
    with torch.inference_mode():
        before = model.encoder(mel)
        decoding.fast(model)
        assert all(type(b.attn) is encoder.EncoderAttention for b in model.encoder.blocks)
        monkeypatch.setattr(encoder, "kernel", lambda threads: "onednn")
        torch.testing.assert_close(model.encoder(mel), before, rtol=1e-4, atol=1e-4)


def test_onednns_product_is_a_linear_and_counts_for_the_fp32_peak():
    from whisper_cpu.bench import peak

    x, w = torch.randn(37, 64), torch.randn(300, 64)
    torch.testing.assert_close(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""), F.linear(x, w), rtol=1e-5, atol=1e-5)
    gflops, arithmetic = peak.gemm_gflops("onednn-fp32", threads=1, repeats=1)
    assert arithmetic == "fp32" and gflops > 0 and "onednn-fp32" in peak.KERNELS
