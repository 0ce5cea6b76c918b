import copy
import io

import pytest
import torch
from torch import nn
from whisper.model import Linear

from whisper_cpu import UserError, audio, quantize, registry
from whisper_cpu.bench import inputs
from whisper_cpu.runner import DecodeOptions


def linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def serialized_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def forward(model, mel, tokens):
    with torch.inference_mode():
        return model.logits(tokens, model.embed_audio(mel))


def test_to_nn_linear_swaps_every_layer_with_identical_outputs(tiny):
    model = copy.deepcopy(tiny)
    torch.manual_seed(0)
    mel, tokens = torch.randn(1, 80, 3000), torch.tensor([[50257, 50362, 440, 1049]])
    before = forward(model, mel, tokens)
    n = len(linears(model))
    quantize.to_nn_linear(model)
    assert not any(isinstance(m, Linear) for m in model.modules())
    assert len(linears(model)) == n == 4 * 6 + 4 * 10  # per attention 4, per mlp 2; 4 encoder + 4 decoder blocks
    assert torch.equal(forward(model, mel, tokens), before)


def test_quantizing_the_model_as_shipped_is_a_silent_no_op(tiny):
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(tiny), {nn.Linear}, dtype=torch.qint8)
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())


def test_qint8_quantizes_every_linear_and_shrinks_the_weights(tiny):
    fp32 = registry.get("fp32-nn").prepare(copy.deepcopy(tiny))
    weights = sum(m.weight.numel() for m in linears(fp32))
    quantized = registry.get("qint8").prepare(copy.deepcopy(tiny))
    dynamic = [m for m in quantized.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(dynamic) == len(linears(fp32))
    assert not [m for m in quantized.modules() if type(m) in (nn.Linear, Linear)]
    saved = serialized_bytes(fp32) - serialized_bytes(quantized)
    assert saved > 2.9 * weights  # 4 bytes -> 1 byte per weight, less the per-layer scales


def test_qint8_still_transcribes(tiny, clips, mirror):
    model = registry.get("qint8").prepare(copy.deepcopy(tiny))
    text = model.transcribe(audio.load(inputs.locate(clips["whisper_jfk"])), language="en", fp16=False, temperature=0.0)["text"]
    assert "ask not what your country can do for you" in text.lower()


def test_registry_rejects_unknown_methods():
    assert set(registry.REGISTRY) >= {"fp32", "fp32-nn", "qint8"}
    with pytest.raises(UserError, match="unknown method 'int3'"):
        registry.get("int3")


def test_vocab_projection_as_a_module_changes_nothing_in_fp32(tiny):
    torch.manual_seed(0)
    mel, tokens = torch.randn(1, 80, 3000), torch.tensor([[50257, 50362, 440, 1049]])
    before = forward(tiny, mel, tokens)
    after = forward(quantize.with_vocab_projection(copy.deepcopy(tiny), lambda m: m), mel, tokens)
    assert torch.allclose(after, before, atol=1e-4)


def test_qint8_logits_also_quantizes_the_vocabulary_projection(tiny):
    model = registry.get("qint8-logits").prepare(copy.deepcopy(tiny))
    projection = model.decoder.vocab_projection
    assert isinstance(projection, torch.ao.nn.quantized.dynamic.Linear) and projection.out_features == 51864
    assert model.decoder.token_embedding.weight.dtype == torch.float32  # the embedding lookup stays exact


@pytest.mark.parametrize("name", ["qint8-logits", "fast-fp32", "fast-qint8", "fast-qint8-pc", "fast-qint8-dec", "fast-fp16w", "fast-bf16enc", "fast-bf16-batched", "fast-qint8-vnni", "bf16", "torchao-int8wo", "torchao-int4wo", "faster-whisper-fp32", "faster-whisper-int8", "whisper.cpp-q8_0"])
def test_every_method_transcribes_real_speech(name, clips, mirror):
    method = registry.get(name)
    if (why := method.unavailable()) and not (method.arithmetic == "bf16" and why.startswith("needs a CPU with")):
        pytest.skip(why)
    # a CPU without native bf16 emulates it: such a method is not offered or timed here, but its words are checked
    runner = method.load("tiny.en", 1)
    result = runner.transcribe(inputs.locate(clips["whisper_jfk"]), DecodeOptions(language="en"))
    assert "ask not what your country can do for you" in result.text.lower() and result.tokens > 10
    assert result.segments and result.segments[-1]["end"] > 9 and result.language == "en"
    encoder_s, decoder_s, tokens = runner.split_times(audio.load(inputs.locate(clips["whisper_jfk"])), DecodeOptions(language="en"))
    assert encoder_s > 0 and decoder_s > 0 and tokens > 10
    assert all(p.exists() for p in runner.weights)


def test_peers_are_registry_entries_with_their_system():
    systems = {m.system.name for m in registry.REGISTRY.values()}
    assert systems == {"whisper_cpu", "faster-whisper", "whisper.cpp"}
    assert not any(registry.REGISTRY[name].ours for name in ("faster-whisper-int8", "whisper.cpp-q8_0", "fp32-gpu"))
    assert {name for name, e in registry.REGISTRY.items() if e.original} == {"fp32", "fp32-nn", "qint8", "fp32-gpu"}
    assert registry.tagged(registry.BENCH) == ("fp32", "fp32-nn", "qint8", "fp32-gpu")
