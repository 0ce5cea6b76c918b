"""The registry: every way of running Whisper that the benchmark compares, methods and peers alike.

An entry loads a runner for a model name; every runner transcribes a file the way a user would and times the
encoder and the decoder alone on one 30 s window, so the harness, the accuracy scorer and the report treat
our methods and the peer systems the same way.

openai-whisper's `Linear` subclasses `nn.Linear`, and `quantize_dynamic` matches module types exactly, so
quantizing the model as shipped silently changes nothing. The original experiment forked whisper to make the
layers plain `nn.Linear`; `to_nn_linear` does that edit at load time instead.
"""

import os
import time
import types
import warnings
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
import whisper
from torch import nn
from whisper.model import Linear, TextDecoder, Whisper

from . import UserError, audio, decoding, models, peers


class Runner(Protocol):
    multilingual: bool
    weights: list  # the files it loaded, for model size on disk

    def transcribe(self, path, language: str, beam_size: int | None) -> dict:
        """{"text": ..., "tokens": n} for a whole file: decode, features, encoder, decoder."""

    def split_times(self, samples, language: str, beam_size: int | None) -> tuple[float, float, int]:
        """(encoder_s, decoder_s, tokens) for the first 30 s window alone."""


class TorchRunner:
    """openai-whisper's own transcribe and decode on a (possibly transformed) PyTorch model."""

    def __init__(self, model: Whisper, weights: list):
        self.model, self.weights = model, weights
        self.multilingual = model.is_multilingual

    def transcribe(self, path, language: str, beam_size: int | None) -> dict:
        result = self.model.transcribe(
            audio.load(path), language=language, temperature=0.0, beam_size=beam_size,
            condition_on_previous_text=False, fp16=False, verbose=None,
        )
        return {"text": result["text"].strip(), "tokens": sum(len(s["tokens"]) for s in result["segments"])}

    def split_times(self, samples, language: str, beam_size: int | None) -> tuple[float, float, int]:
        model = self.model
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), model.dims.n_mels)[None].to(model.device)
        options = whisper.DecodingOptions(language=language, temperature=0.0, beam_size=beam_size, fp16=False)
        with torch.inference_mode():
            start = time.perf_counter()
            features = model.embed_audio(mel)
            _sync(model)
            encoder_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = model.decode(features, options)
            _sync(model)
        return encoder_s, time.perf_counter() - start, len(decoded[0].tokens)


def _sync(model: Whisper) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def to_nn_linear(model: Whisper) -> Whisper:
    """Replace every whisper `Linear` by a plain `nn.Linear` sharing its parameters (the original's fork)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is Linear:
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                plain.weight, plain.bias = child.weight, child.bias
                setattr(module, name, plain)
    return model


def quantize_qint8(model: Whisper) -> Whisper:
    """The original's method: dynamic int8 for every nn.Linear (weights int8, activations quantized per call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")  # torch.ao eager quantization: deprecated, still shipped
        return torch.ao.quantization.quantize_dynamic(to_nn_linear(model), {nn.Linear}, dtype=torch.qint8)


def _projected_forward(self: TextDecoder, x, xa, kv_cache=None):
    """TextDecoder.forward with the vocabulary projection done by a module, so quantizers can reach it."""
    offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
    x = self.token_embedding(x) + self.positional_embedding[offset : offset + x.shape[-1]]
    x = x.to(xa.dtype)
    for block in self.blocks:
        x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
    return self.vocab_projection(self.ln(x))[..., : self.token_embedding.num_embeddings].float()


def with_vocab_projection(model: Whisper, transform: Callable[[Whisper], Whisper], multiple: int = 1) -> Whisper:
    """Expose `x @ token_embedding.weight.T` (per token the largest matrix product) as an nn.Linear, transform.

    openai-whisper computes the logits with a bare matmul, so module-based quantization leaves it in fp32;
    for tiny and base it is most of the decoder's arithmetic per token. Kernels that need the output size to
    be a multiple of some block get zero rows appended, and the forward drops their logits again.
    """
    decoder = to_nn_linear(model).decoder
    weight = decoder.token_embedding.weight
    rows = -(-weight.shape[0] // multiple) * multiple
    decoder.vocab_projection = nn.Linear(weight.shape[1], rows, bias=False)
    if rows == weight.shape[0]:
        decoder.vocab_projection.weight = weight
    else:
        decoder.vocab_projection.weight = nn.Parameter(F.pad(weight.detach(), (0, 0, 0, rows - weight.shape[0])), requires_grad=False)
    model = transform(model)
    model.decoder.forward = types.MethodType(_projected_forward, model.decoder)
    return model


class CastLinear(nn.Module):
    """An nn.Linear kept in a lower dtype: inputs cast down, outputs back up, so the rest stays float32.

    The inner layer is a plain nn.Linear, so weight quantizers that need bfloat16 activations can replace it.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.inner = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, dtype=dtype)
        with torch.no_grad():
            self.inner.weight.copy_(linear.weight)
            if linear.bias is not None:
                self.inner.bias.copy_(linear.bias)
        self.inner.requires_grad_(False)

    def forward(self, x):
        return self.inner(x.to(self.inner.weight.dtype)).to(x.dtype)


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                setattr(module, name, make(child))
    return model


def torchao_quantize(model: Whisper, config) -> Whisper:
    """torchao's quantize_ on every nn.Linear (the vocabulary projection included)."""
    from torchao.quantization import quantize_

    quantize_(model, config)
    return model


def torchao_config(name: str):
    import logging

    for noisy in ("torchao", "torch.utils._pytree"):  # CUDA-only extensions that fail to load on a CPU build
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import torchao.quantization as q

    if name == "int4wo":
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=128)  # the CPU packing (Int4OpaqueTensor), bf16 activations
    return {"int8dq": q.Int8DynamicActivationInt8WeightConfig, "int8wo": q.Int8WeightOnlyConfig}[name]()


def torchao_method(config: str, compile: bool = False) -> Callable[[Whisper], Whisper]:
    def prepare(model: Whisper) -> Whisper:
        if config == "int4wo":
            model = with_vocab_projection(model, lambda m: torchao_quantize(replace_linears(m, CastLinear), torchao_config(config)), multiple=16)
        else:
            model = with_vocab_projection(model, lambda m: torchao_quantize(m, torchao_config(config)))
        return compiled(model) if compile else model

    return prepare


def compiled(model: Whisper) -> Whisper:
    """torch.compile of the encoder and the whole decoder (kv-cache hooks trace without graph breaks).

    Dynamo keys its caches on TextDecoder.forward's code, not on the model, so each compiled model starts
    from a reset; the first transcribe (the benchmark's warm-up) pays the compile time.
    """
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = 32
    model.encoder = torch.compile(model.encoder)
    model.decoder = torch.compile(model.decoder)
    return model


def cpu_has(*flags: str) -> str | None:
    """None when the CPU has any of the flags, else why a method cannot run here."""
    text = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    present = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return None if present & set(flags) else f"needs a CPU with {' or '.join(flags)}"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    load: Callable[[str, int], Runner]  # (model name, threads) -> runner
    system: str = "whisper_cpu"
    prepare: Callable[[Whisper], Whisper] | None = None  # the model transform, for PyTorch methods
    device: str = "cpu"
    unavailable: Callable[[], str | None] = lambda: None  # why it cannot run on this machine, if it cannot
    arithmetic: str = "fp32"  # the number format of its matrix products, for the share of this CPU's peak


def torch_method(name: str, summary: str, prepare: Callable[[Whisper], Whisper], device: str = "cpu", unavailable=lambda: None,
                 arithmetic: str = "fp32") -> Method:
    def load(model: str, threads: int) -> TorchRunner:
        return TorchRunner(prepare(models.load_model(model)).to(device), [models.checkpoint_path(model)])

    return Method(name, summary, load, prepare=prepare, device=device, unavailable=unavailable, arithmetic=arithmetic)


REGISTRY = {
    m.name: m
    for m in [
        torch_method("fp32", "openai-whisper as shipped, float32 on the CPU", lambda model: model),
        torch_method("fp32-nn", "float32 after turning whisper's Linear into plain nn.Linear (the original's fork)", to_nn_linear),
        torch_method("qint8", "the original's torch dynamic int8 quantization of every nn.Linear", quantize_qint8, arithmetic="int8"),
        torch_method("qint8-logits", "qint8 plus the vocabulary projection, which the original left in fp32",
                     lambda model: with_vocab_projection(model, quantize_qint8), arithmetic="int8"),
        torch_method("bf16", "bfloat16 weights and matrix products for every Linear and the vocabulary projection",
                     lambda model: with_vocab_projection(model, lambda m: replace_linears(m, CastLinear)),
                     unavailable=lambda: cpu_has("avx512_bf16", "amx_bf16"), arithmetic="bf16"),
        torch_method("torchao-int8dq", "torchao int8 dynamic activations + int8 per-row weights, eager", torchao_method("int8dq"), arithmetic="int8"),
        torch_method("torchao-int8dq-compile", "torchao int8 dynamic activations + int8 weights, encoder and decoder torch.compiled",
                     torchao_method("int8dq", compile=True), arithmetic="int8"),
        torch_method("torchao-int8wo", "torchao int8 weight-only, eager (compile matches only bf16 activations, so it gains nothing)",
                     torchao_method("int8wo")),
        torch_method("torchao-int4wo", "torchao int4 weight-only, groups of 128, CPU packing, bfloat16 activations",
                     torchao_method("int4wo"), unavailable=lambda: cpu_has("avx512_bf16", "amx_bf16"), arithmetic="bf16"),
        torch_method("fast-fp32", "openai-whisper's search on our decoder: static kv-cache, fused q/k/v, audio keys once, batched rules",
                     decoding.fast),
        torch_method("fast-qint8", "the fast decoder with dynamic int8 for every matrix product, vocabulary projection included",
                     lambda model: quantize_qint8(decoding.fast(model)), arithmetic="int8"),
        Method("faster-whisper-fp32", "faster-whisper (CTranslate2) compute_type float32, same weights",
               lambda model, threads: peers.FasterWhisperRunner(model, "float32", threads), system="faster-whisper"),
        Method("faster-whisper-int8", "faster-whisper (CTranslate2) compute_type int8, same weights",
               lambda model, threads: peers.FasterWhisperRunner(model, "int8", threads), system="faster-whisper", arithmetic="int8"),
        *(
            Method(f"whisper.cpp-{ftype}", f"whisper.cpp (pywhispercpp built natively), ggml {ftype} written from the same checkpoint",
                   lambda model, threads, ftype=ftype: peers.WhisperCppRunner(model, ftype, threads), system="whisper.cpp",
                   unavailable=peers.whispercpp_missing, arithmetic="fp32" if ftype == "f16" else "int8")
            for ftype in ("f16", "q8_0", "q5_0")
        ),
        torch_method("fp32-gpu", "the original's GPU column: openai-whisper float32 on CUDA (only where CUDA exists)", lambda model: model, "cuda",
                     unavailable=lambda: None if torch.cuda.is_available() else "CUDA is not available, so the original's GPU fp32 column is skipped"),
    ]
}


DEFAULT = "fast-qint8"  # `transcribe --method auto` where this CPU has no measurements (README: why)


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise UserError(f"unknown method '{name}': use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
